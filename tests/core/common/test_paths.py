"""Recipe values that become paths the orchestrator writes stay inside the project's runs/ and
datasets/ (and a download inside models_dir); files the user points at may be anywhere."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import datasets_dir, inside, runs_dir
from orchestrator.core.recipes.loading import load, load_pipeline
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.role_paths import role_paths

RUN = "a run name is a plain word (no path): the run goes to runs/<name>/"
DATASET = "a dataset name is a plain word such as train_answer_instruct (no path, no .json)"
SOURCE = "a model id is owner/name such as qwen/Qwen2-7B-Instruct (no '..', no absolute path)"

ESCAPES = [
    # (dotted key, value, reason)
    ("name", "../x", RUN),
    ("name", "/abs", RUN),
    ("name", "a/b", RUN),
    ("name", "..", RUN),
    ("name", "a\\b", RUN),
    ("name", "", RUN),
    ("name", "a\x00b", RUN),
    ("name", "x" * 61, RUN),
    ("dataset.name", "../../etc/passwd", DATASET),
    ("dataset.name", "a/b", DATASET),
    ("dataset.name", "/abs", DATASET),
    ("dataset.name", "train.json", DATASET),
    ("dataset.name", "dataset_info", "dataset_info is reserved for datasets/dataset_info.json; pick another name"),
    ("model.source", "../../etc", SOURCE),
    ("model.source", "/etc/x", SOURCE),
    ("model.source", "qwen/../../x", SOURCE),
]


def _yaml_line(dotted: str, value: str) -> str:
    quoted = '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    head, _, last = dotted.rpartition(".")
    return f"{head}:\n  {last}: {quoted}\n" if head else f"{last}: {quoted}\n"


@pytest.mark.parametrize("dotted, value, reason", ESCAPES)
def test_escape_in_recipe_names_file_and_key(project: Path, dotted: str, value: str, reason: str) -> None:
    path = project / "recipes" / "bad.yaml"
    path.write_text("role: answer\n" + _yaml_line(dotted, value), encoding="utf-8")
    with pytest.raises(UserError) as info:
        load(path, RoleRecipe)
    assert info.value.lines == [f"recipes/bad.yaml: {dotted} {reason}"]


@pytest.mark.parametrize("dotted, value, reason", [e for e in ESCAPES if "\x00" not in e[1]])
def test_escape_through_set_exits_2(project: Path, cli, dotted: str, value: str, reason: str) -> None:
    code, out, err = cli("render", "answer", "--set", f"{dotted}={value}")
    assert code == 2 and out == ""
    assert err.splitlines() == [f"Error: --set: {dotted} {reason}"]
    assert not (project / "runs").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "dotted, value",
    [("name", "my-run.v2"), ("name", "答案模型"), ("dataset.name", "train_answer_v2"), ("model.source", "LLM-Research/Meta-Llama-3-8B")],
)
def test_plain_names_are_accepted(project: Path, dotted: str, value: str) -> None:
    path = project / "recipes" / "ok.yaml"
    path.write_text("role: answer\n" + _yaml_line(dotted, value), encoding="utf-8")
    recipe = load(path, RoleRecipe).recipe
    assert role_paths(recipe).run_dir.parent == runs_dir()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["name", "dataset.name", "model.source"]), value=st.text(st.characters(codec="utf-8"), max_size=70))
def test_any_accepted_name_stays_inside(project: Path, key: str, value: str) -> None:
    """Whatever the validator accepts resolves inside runs/, datasets/ or models_dir."""
    path = project / "recipes" / "f.yaml"
    path.write_text("role: answer\n" + _yaml_line(key, value), encoding="utf-8")
    try:
        recipe = load(path, RoleRecipe).recipe
    except UserError as e:
        assert len(e.lines) == 1 and e.lines[0].startswith(f"recipes/f.yaml: {key} ")
        return
    models = (project / "models").resolve()
    for written, base in [
        (runs_dir() / recipe.run_name, runs_dir()),
        (datasets_dir() / f"{recipe.dataset_name}.json", datasets_dir()),
        (datasets_dir() / f"{recipe.eval_dataset_name}.json", datasets_dir()),
        (models / recipe.model.source, models),
    ]:
        assert written.resolve().parent == base or base in written.resolve().parents
        assert len(written.name.encode()) < 256  # one file-name component the OS accepts
    assert recipe.dataset_name != "dataset_info"


# ---------------------------------------------------------------- paths.inside, the second guard


@pytest.mark.parametrize("rel, ok", [("x", True), ("a/b", True), (".", True), ("../x", False), ("/etc", False), ("a/../../x", False), ("link/x", False)])
def test_inside(tmp_path: Path, rel: str, ok: bool) -> None:
    base = tmp_path / "runs"
    base.mkdir()
    os.symlink(tmp_path.parent, base / "link")  # a symlink out of runs/ counts as outside
    if ok:
        assert inside(rel, base, "name") == (base / rel).resolve()
    else:
        with pytest.raises(UserError, match=rf"^name: {re.escape(rel)} is outside {re.escape(str(base))} \(paths may not escape it\)$"):
            inside(rel, base, "name")


def test_role_paths_refuses_an_unvalidated_name(project: Path) -> None:
    # model_construct skips the validators, as a future code path might: inside() still refuses
    recipe = RoleRecipe.model_construct(role="answer", name="../../x")
    with pytest.raises(UserError, match=r"^name: \.\./\.\./x is outside "):
        role_paths(recipe)


# ---------------------------------------------------------------- user files may be anywhere


def test_user_files_may_be_anywhere(project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    path = project / "recipes" / "p.yaml"
    path.write_text(
        f"data:\n  train: {elsewhere}/train.jsonl\n  test: ../../test.jsonl\n"
        f"teacher:\n  preload: [{elsewhere}/cache.jsonl, ../shared/cache.jsonl]\n"
        "inference:\n  answer_recipe: /srv/recipes/answer.yaml\n",
        encoding="utf-8",
    )
    recipe = load_pipeline(path).recipe
    assert recipe.data.train == f"{elsewhere}/train.jsonl" and recipe.data.test == "../../test.jsonl"
    assert recipe.teacher.preload == [f"{elsewhere}/cache.jsonl", "../shared/cache.jsonl"]
    role = load(_write(project / "recipes" / "m.yaml", "role: answer\nmodel:\n  path: /mnt/models/qwen\n  models_dir: ../models\n"), RoleRecipe)
    assert role.recipe.model.path == "/mnt/models/qwen" and role.recipe.model.models_dir == "../models"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_project_is_found_from_a_folder_below_it(project, monkeypatch, tmp_path_factory) -> None:
    from orchestrator.core.common.paths import project_root

    monkeypatch.delenv("ORCHESTRATOR_HOME")
    (project / "data" / "round1").mkdir(parents=True)
    monkeypatch.chdir(project / "data" / "round1")
    assert project_root() == project.resolve()


def test_outside_a_project_the_error_names_orchestrator_home(cli, monkeypatch, tmp_path_factory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.delenv("ORCHESTRATOR_HOME", raising=False)
    monkeypatch.chdir(elsewhere)
    code, _out, err = cli("check", "answer")
    assert code == 2
    assert err == (f"Error: recipes/answer.yaml: no such recipe (no project found from {elsewhere.resolve()} up: "
                   "run from the project folder or set ORCHESTRATOR_HOME=/path/to/project)\n")


def test_inside_a_project_a_missing_recipe_lists_its_folder(cli, project, monkeypatch) -> None:
    monkeypatch.delenv("ORCHESTRATOR_HOME")
    monkeypatch.chdir(project)
    code, _out, err = cli("check", "answer", "--recipe", "recipes/nosuch-answer.yaml")
    assert code == 2
    (line,) = err.splitlines()
    assert line.startswith("Error: recipes/nosuch-answer.yaml: no such recipe (recipes/ holds ")
    assert "answer.yaml, " in line and "pipeline.yaml" in line and "no project found" not in line
