"""`orchestrator runs` and `runs prune` (stages/runs.py) on kept trainings laid out as train leaves
them: the table (names, what differs from the recipe now, accuracy from a scored run, size), names
that load as recipes, and prune by name, count, age and all but the current, merged copies first."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.core.common.errors import UserError
from orchestrator.core.recipes.loading import load_role


def _train(project: Path, folder: str, identity: str, recipe: dict, *, kept: bool = False, age_days: float = 0,
           merged: bool = False) -> Path:
    run = project / "runs" / folder
    where = run / "kept" / identity if kept else run
    (where / "adapter").mkdir(parents=True)
    (where / "adapter" / "adapter_model.safetensors").write_bytes(b"a" * 1000)
    if merged:
        (where / "merged").mkdir()
        (where / "merged" / "model.safetensors").write_bytes(b"m" * 5000)
    (where / "manifest.json").write_text(json.dumps({
        "identity": identity, "adapter_hash": f"hash{identity}", "recipe": recipe,
        "recipe_file": "recipes/tiny-answer.yaml", "started": "2026-12-07T10:00:00"}))
    when = 1_000_000 if age_days else None
    if when:
        os.utime(where / "manifest.json", (when, when))
    return where


@pytest.fixture
def kept(project: Path) -> Path:
    recipe = load_role("answer", "recipes/tiny-answer.yaml").raw
    _train(project, "tiny-answer", "c" * 16, recipe)
    _train(project, "tiny-answer", "a" * 16, {**recipe, "train": {**recipe["train"], "lora_alpha": 16}}, kept=True,
           age_days=30, merged=True)
    _train(project, "tiny-answer", "b" * 16, {**recipe, "train": {**recipe["train"], "max_steps": 5}}, kept=True,
           merged=True)
    variant = load_role("answer", "recipes/tiny-answer.yaml", ["train.learning_rate=0.001"])
    _train(project, variant.recipe.run_name, "d" * 16, variant.raw)
    scored = project / "runs" / "tiny-infer"
    scored.mkdir()
    (scored / "run.json").write_text(json.dumps({"models": {"answer": {"identity": f"x@adapter-hash{'d' * 16}"}}}))
    (scored / "score.json").write_text(json.dumps({"accuracy": 0.625, "gold": "g"}))
    return project


def test_the_table_names_every_experiment_and_what_differs(kept: Path) -> None:
    from orchestrator.stages.runs import rows, table

    found = {r.experiment.name: r for r in rows()}
    variant = next(n for n in found if "@" in n)
    assert sorted(found) == sorted(["tiny-answer", "tiny-answer~aaaaaaaa", "tiny-answer~bbbbbbbb", variant])
    assert found["tiny-answer"].differs == [] and found["tiny-answer"].experiment.current
    assert found["tiny-answer~aaaaaaaa"].differs == ["train.lora_alpha 8 -> 16"]
    assert found["tiny-answer~bbbbbbbb"].differs == ["train.max_steps 60 -> 5"]
    assert found[variant].differs == ["train.learning_rate 0.01 -> 0.001"]
    assert found[variant].accuracy == 0.625 and found[variant].scored_in == "runs/tiny-infer"
    assert found["tiny-answer~aaaaaaaa"].bytes >= 6000 and found["tiny-answer"].bytes >= 1000
    shown = table(rows())
    assert shown.splitlines()[0].split()[:2] == ["NAME", "RECIPE"] and "0.6250 (runs/tiny-infer)" in shown


def test_a_name_loads_as_the_recipe_it_was_trained_with(kept: Path) -> None:
    loaded = load_role("answer", "tiny-answer~bbbbbbbb")
    assert loaded.recipe.run_name == "tiny-answer~bbbbbbbb" and loaded.recipe.train["max_steps"] == 5
    variant = next(p.name for p in (kept / "runs").iterdir() if "@" in p.name)
    assert load_role("answer", variant).recipe.run_name == variant
    with pytest.raises(UserError):
        load_role("answer", "tiny-answer~ffffffff")  # no such experiment: read as a recipe file, not found


@pytest.mark.parametrize("how, gone", [
    ({"names": ["tiny-answer~aaaaaaaa"]}, ["tiny-answer/kept/aaaaaaaaaaaaaaaa"]),
    ({"older_than_days": 7}, ["tiny-answer/kept/aaaaaaaaaaaaaaaa"]),
    ({"keep_last": 1}, ["tiny-answer/kept/aaaaaaaaaaaaaaaa"]),
    ({"all_but_current": True, "merged_only": True},
     ["tiny-answer/kept/aaaaaaaaaaaaaaaa/merged", "tiny-answer/kept/bbbbbbbbbbbbbbbb/merged"]),
    ({"all_but_current": True}, ["tiny-answer/kept/aaaaaaaaaaaaaaaa", "tiny-answer/kept/bbbbbbbbbbbbbbbb"]),
])
def test_prune_removes_what_is_named_and_never_the_current(kept: Path, how: dict, gone: list[str]) -> None:
    from orchestrator.stages.runs import prune

    args = {"names": [], "older_than_days": None, "keep_last": None, "all_but_current": False, "merged_only": False,
            **how}
    before = sorted(p.relative_to(kept / "runs").as_posix() for p in (kept / "runs").rglob("*"))
    assert sorted(p.path.relative_to(kept / "runs").as_posix() for p in prune(**args, dry_run=True)) == sorted(gone)
    assert sorted(p.relative_to(kept / "runs").as_posix() for p in (kept / "runs").rglob("*")) == before
    prune(**args)
    for path in gone:
        assert not (kept / "runs" / path).exists()
    assert (kept / "runs/tiny-answer/adapter/adapter_model.safetensors").exists()


def test_prune_refuses_the_current_model_and_an_unknown_name(kept: Path) -> None:
    from orchestrator.stages.runs import prune

    for name, said in (("tiny-answer", "is the model of its recipe as it reads now"), ("nope", "no such experiment")):
        with pytest.raises(UserError) as info:
            prune(names=[name], older_than_days=None, keep_last=None, all_but_current=False, merged_only=False)
        assert said in info.value.lines[0]


def test_infer_runs_are_listed_and_compared_by_name(kept: Path, cli) -> None:
    """The infer runs beside the trainings: the current one and a kept one, each by the name
    `compare` takes, with its accuracy (score.json) and the models that answered (run.json)."""
    from orchestrator.stages.runs import run_rows, runs_table

    gold = (kept / "datasets/sample/test_gold.jsonl").read_text().splitlines()
    current, entry = kept / "runs/tiny-infer", kept / "runs/tiny-infer/kept" / ("e" * 16)
    entry.mkdir(parents=True)
    (current / "run.json").write_text(json.dumps({"models": {"answer": {"manifest": "runs/tiny-answer/manifest.json"},
                                                             "evaluate": {"manifest": "runs/tiny-evaluate/manifest.json"}}}))
    (current / "submission.jsonl").write_text("\n".join(gold) + "\n")
    wrong = json.loads(gold[0])
    wrong["questions"][0]["answer"] = "G"
    (entry / "submission.jsonl").write_text("\n".join([json.dumps(wrong, ensure_ascii=False), *gold[1:]]) + "\n")
    (entry / "score.json").write_text(json.dumps({"accuracy": 0.5, "gold": "g"}))
    found = {r.run.name: r for r in run_rows()}
    assert sorted(found) == ["tiny-infer", "tiny-infer~eeeeeeee"]
    assert found["tiny-infer"].accuracy == 0.625 and found["tiny-infer~eeeeeeee"].accuracy == 0.5
    assert found["tiny-infer"].models == "tiny-answer + tiny-evaluate"
    shown = runs_table(run_rows())
    assert shown.splitlines()[0].split() == ["RUN", "MODELS", "ACCURACY", "SIZE"] and "tiny-infer~eeeeeeee (kept)" in shown
    code, out, err = cli("runs")
    assert code == 0 and "tiny-infer~eeeeeeee (kept)" in out, err
    code, out, err = cli("compare", "tiny-infer", "tiny-infer~eeee", "--gold", "datasets/sample/test_gold.jsonl")
    assert code == 0, err
    assert "runs/tiny-infer/kept/eeeeeeeeeeeeeeee" in out and "runs/tiny-infer" in out, out
