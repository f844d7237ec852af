"""`orchestrator make-vars`, what make asks once per call: which recipe each role uses (every
shipped recipe reachable), the files it is made of, and every command argument quoted for the
shell (`make -n`, nothing run)."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import pytest
from helpers import REPO, make, with_makefile

from orchestrator.core.recipes.loading import load
from orchestrator.core.recipes.schema import RoleRecipe

GPTQ = ("ANSWER_RECIPE=recipes/answer-32b-gptq.yaml", "EVALUATE_RECIPE=recipes/evaluate-32b-gptq.yaml")
# Every shipped recipe, and the make variables that make it the one its role uses (a pipeline
# recipe: the one the commands read). A recipe added to recipes/ needs a line here, which make
# must then reach.
SHIPPED = {
    "answer.yaml": (),
    "evaluate.yaml": (),
    "pipeline.yaml": (),
    "tiny-answer.yaml": ("RECIPE=tiny",),
    "tiny-evaluate.yaml": ("RECIPE=tiny",),
    "tiny-pipeline.yaml": ("RECIPE=tiny",),
    "tiny-answer-b.yaml": ("RECIPE=recipes/tiny-answer-b.yaml",),
    "tiny-answer-dpo.yaml": ("RECIPE=tiny", "ANSWER_RECIPE=recipes/tiny-answer-dpo.yaml"),
    "answer-dpo.yaml": ("ANSWER_RECIPE=recipes/answer-dpo.yaml",),
    "answer-32b-gptq.yaml": GPTQ,
    "evaluate-32b-gptq.yaml": GPTQ,
}


def plan_lines(project: Path, *args: str) -> list[str]:
    done = make(project, "-n", *args, timeout=120)
    assert done.returncode == 0, done.stderr
    commands = done.stdout.replace("\\\n", " ")  # a command continued on the next line: one line
    return [line.removeprefix(".venv/bin/").strip() for line in commands.splitlines()]


def test_the_table_names_every_shipped_recipe() -> None:
    assert sorted(SHIPPED) == sorted(p.name for p in (REPO / "recipes").iterdir() if p.suffix in (".yaml", ".yml"))


@pytest.mark.parametrize("variables", sorted(set(SHIPPED.values())), ids=lambda v: " ".join(v) or "default")
def test_make_reaches_every_shipped_recipe(project: Path, variables: tuple[str, ...]) -> None:
    lines = plan_lines(with_makefile(project), "all", *variables)
    plan = "\n".join(lines)
    for name in [n for n, v in SHIPPED.items() if v == variables]:
        if "pipeline" in name:
            assert f"orchestrator distill --recipe recipes/{name}" in plan, name
            continue
        recipe = load(project / "recipes" / name, RoleRecipe).recipe
        role = recipe.role
        for command in (f"orchestrator dataset {role} --recipe recipes/{name} ", f"orchestrator train {role} --recipe recipes/{name}"):
            assert any(line.startswith(command) for line in lines), (name, command)
        assert f"--{role}-recipe recipes/{name}" in plan, name  # the model infer serves
        if "RECIPE=tiny" not in variables:  # its own base, in its own run folder
            assert f"orchestrator download {role} --recipe recipes/{name}" in plan, name
            assert f"touch runs/{recipe.run_name}/.base-model" in plan, name


def test_a_path_with_a_space_or_a_quote_is_one_argument_and_one_file(spaced_project: Path) -> None:
    spaced = spaced_project
    train = spaced / "my data" / "it's 1.jsonl"
    train.parent.mkdir()
    shutil.copy(spaced / "datasets/sample/train.jsonl", train)
    recipe = spaced / "my recipes" / "answer b.yaml"
    recipe.parent.mkdir()
    recipe.write_text("extends: ../recipes/tiny-answer.yaml\nname: answer-b\ndataset:\n  name: train_answer_b\n",
                      encoding="utf-8")
    out = spaced / "my image"

    lines = plan_lines(spaced, "all", "RECIPE=tiny", "TRAIN=my data/it's 1.jsonl", "ANSWER_RECIPE=my recipes/answer b.yaml",
                       f"OUT={out}")
    words = [shlex.split(line) for line in lines if line.startswith("orchestrator ")]
    assert ["orchestrator", "train", "answer", "--recipe", "my recipes/answer b.yaml"] in words
    distill = next(w for w in words if w[1] == "distill")
    assert distill[-2:] == ["--set", "data.train=my data/it's 1.jsonl"]
    assert ["--answer-recipe", "my recipes/answer b.yaml"] == next(w for w in words if w[1] == "infer")[-4:-2]

    fragment = (spaced / ".make/vars.mk").read_text(encoding="utf-8")
    assert r"TRAIN_FILES := my\ data/it's\ 1.jsonl" in fragment  # make dependencies, one file each
    assert r"ANSWER_DEPS := my\ recipes/answer\ b.yaml recipes/answer.yaml recipes/tiny-answer.yaml" in fragment
    assert "ANSWER_RUN := runs/answer-b" in fragment and "ANSWER_SET := datasets/train_answer_b.json" in fragment

    lines = plan_lines(spaced, "package", "RECIPE=tiny", f"OUT={out}")
    assert ["--out", str(out)] == shlex.split(next(line for line in lines if "orchestrator package" in line))[2:4]


# make variables that make-vars refuses: make stops before it plans, with one Error line
REFUSED = [
    (("LIMIT=three",), "Error: LIMIT=three: a number of problems such as 3 (LIMIT= for all of them)",
     "make stopped: `orchestrator make-vars` could not answer"),
    (("RECIPE=recipes/tiny-answer-b.yaml", "ANSWER_RECIPE=recipes/tiny-answer.yaml"),
     "Error: RECIPE=recipes/tiny-answer-b.yaml and ANSWER_RECIPE=recipes/tiny-answer.yaml name two Answer recipes",
     "make stopped: `orchestrator make-vars` could not answer"),
    (("EVALUATE_RECIPE=recipes/answer.yaml",),
     "Error: recipes/answer.yaml: role is answer, but this command is for the evaluate model",
     "EVALUATE_RECIPE=recipes/answer.yaml is not an Evaluate recipe that loads; "
     "`orchestrator check evaluate --recipe recipes/answer.yaml` says why"),
]


@pytest.mark.parametrize("variables, error, stop", REFUSED, ids=["limit", "two-answer-recipes", "wrong-role"])
def test_make_stops_before_planning(project: Path, variables: tuple[str, ...], error: str, stop: str) -> None:
    done = make(with_makefile(project), "-n", "answer-model", *variables, timeout=120)
    assert done.returncode != 0 and done.stdout == ""
    assert error in done.stderr and stop in done.stderr and "Traceback" not in done.stderr
    assert not (project / ".make/kept.json").exists()  # nothing kept of a refused call


def test_a_recipe_no_model_needs_does_not_stop_make_check(project: Path) -> None:
    """`make check` shows what is wrong with a recipe; make stops only a call that builds models."""
    broken = project / "recipes/tiny-evaluate.yaml"
    broken.write_text(broken.read_text(encoding="utf-8") + "bogus: 1\n", encoding="utf-8")
    lines = plan_lines(with_makefile(project), "check", "RECIPE=tiny")
    assert "orchestrator check evaluate --recipe recipes/tiny-evaluate.yaml" in lines
    done = make(project, "-n", "all", "RECIPE=tiny", timeout=120)
    assert done.returncode != 0
    assert done.stderr.count("Error: recipes/tiny-evaluate.yaml: bogus is not a recipe key") == 1
    assert "make stopped: a role recipe does not load (its Error is above)" in done.stderr


def test_the_fragment_is_rewritten_each_call_and_names_the_recipes_in_force(project: Path) -> None:
    with_makefile(project)
    plan_lines(project, "answer-model", "EVALUATE_RECIPE=recipes/evaluate-32b-gptq.yaml")
    fragment = (project / ".make/vars.mk").read_text(encoding="utf-8")
    assert "EVALUATE_RUN := runs/evaluate-32b-gptq" in fragment
    assert "EVALUATE_WEIGHTS := adapter" in fragment  # a GPTQ base: nothing merges into it
    assert "EVALUATE_DEPS := recipes/answer-32b-gptq.yaml recipes/answer.yaml recipes/evaluate-32b-gptq.yaml" in fragment
    os.utime(project / ".make/vars.mk", (0, 0))
    plan_lines(project, "answer-model")
    assert "EVALUATE_RUN := runs/evaluate\n" in (project / ".make/vars.mk").read_text(encoding="utf-8")
