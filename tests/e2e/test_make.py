"""`make answer-model RECIPE=tiny` for real, through the planner (`orchestrator run`), which skips by content."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import make, trained_copy, with_makefile

pytestmark = pytest.mark.slow


def test_answer_model_then_nothing_to_do_then_stale_recipe(tiny_project: Path, made_eval, tmp_path: Path) -> None:
    """What `make answer-model` runs from nothing; then, in the session's trained project (made_eval,
    whose `make eval` ran it: test_pipeline checks each command), nothing to do, and a recipe saved
    again unchanged is checked by content and trains nothing."""
    plan = make(with_makefile(tiny_project), "-n", "answer-model", "RECIPE=tiny", timeout=120).stdout
    steps = [plan.find(f"orchestrator {step}") for step in ("distill", "dataset answer", "train answer", "merge answer")]
    assert -1 not in steps and steps == sorted(steps), plan  # each in turn
    assert made_eval.done.returncode == 0, made_eval.done.stderr[-3000:]
    project = trained_copy(made_eval.project, tmp_path / "trained")
    assert (project / "runs/tiny-answer/merged/config.json").exists()

    assert "$ orchestrator" not in make(project, "-n", "answer-model", "RECIPE=tiny").stdout  # up to date
    again = make(project, "answer-model", "RECIPE=tiny")
    assert again.returncode == 0 and "$ orchestrator" not in again.stdout  # trains nothing

    recipe = project / "recipes" / "tiny-answer.yaml"
    time.sleep(0.01)
    os.utime(recipe)  # saved again, unchanged, after the model was trained
    plan = make(project, "-n", "answer-model", "RECIPE=tiny").stdout
    assert "$ orchestrator" not in plan and "[run] train-tiny-answer: up to date" in plan  # content decides
    old = time.time() - 10**6
    text = recipe.read_text()
    recipe.write_text(text.replace("learning_rate: 1.0e-2", "learning_rate: 2.0e-3"))
    os.utime(recipe, (old, old))  # changed, and dated before the adapter
    plan = make(project, "-n", "answer-model", "RECIPE=tiny").stdout
    assert "[run] train-tiny-answer: train.learning_rate 0.01 -> 0.002 (recipes/tiny-answer.yaml)" in plan
    assert "$ orchestrator train answer --recipe recipes/tiny-answer.yaml" in plan
    assert "$ orchestrator distill" not in plan  # the teacher is not asked again


def test_a_data_file_in_a_folder_with_a_space_in_a_project_in_one(spaced_project: Path) -> None:
    """For real: distil and build the Answer set from TRAIN="my data/train 1.jsonl" in a project
    whose folder holds a space and a quote (`orchestrator run dataset-answer`, one stage and what
    it needs); the next call keeps TRAIN, and an edit of the file is seen by content."""
    train = spaced_project / "my data" / "train 1.jsonl"
    train.parent.mkdir()
    shutil.copy(spaced_project / "datasets/sample/train.jsonl", train)  # the sample's cached teacher replies

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(spaced_project / ".venv/bin/orchestrator"), "run", "dataset-answer", *args],
                              cwd=spaced_project, capture_output=True, text=True, timeout=600)

    done = run("RECIPE=tiny", "TRAIN=my data/train 1.jsonl")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[distill] data.train = my data/train 1.jsonl (from TRAIN)" in done.stderr
    assert (spaced_project / "datasets/train_answer_instruct.json").exists()
    plan = run("--dry-run")
    assert "$ orchestrator" not in plan.stdout  # the kept TRAIN, up to date
    assert "TRAIN=my data/train 1.jsonl (kept in .orchestrator/state.yaml" in plan.stderr

    train.write_text(train.read_text() + "\n")  # the data file edited: distill again
    plan = run("--dry-run")
    assert "[run] distill: " in plan.stdout and "file my data/train 1.jsonl changed" in plan.stdout
    assert "$ orchestrator distill --pipeline recipes/tiny-pipeline.yaml" in plan.stdout


def test_help_lists_every_target_and_variable(project: Path) -> None:
    out = make(with_makefile(project), "help").stdout
    for name in ("make all", "make check", "make eval", "TRAIN=", "TEST=", "GOLD=", "PIPELINE=", "TEACHER_URL=",
                 "TEACHER_MODEL=", "TEACHER_KEY_ENV=", "LIMIT="):
        assert name in out, name
    targets = [line for line in (project / "Makefile").read_text().splitlines() if re.match(r"[a-z][a-z-]*:", line)]
    assert out.count("  make ") == len(targets)  # every named target, from the comment beside it


def test_a_missing_input_is_the_tools_error(tiny_project: Path) -> None:
    done = make(with_makefile(tiny_project), "answer-model", "RECIPE=tiny", "TRAIN=data/round1_train_data.jsonl")
    assert done.returncode != 0 and "No rule to make target" not in done.stderr
    assert (f"Error: data.train = data/round1_train_data.jsonl (from TRAIN): no such file "
            f"(looked for {tiny_project}/data/round1_train_data.jsonl)") in done.stderr


def test_eval_from_a_clean_runs_folder(made_eval) -> None:
    project, done = made_eval.project, made_eval.done
    assert made_eval.clean
    assert done.returncode == 0, done.stderr[-3000:]  # distil, train and merge both, infer
    assert "orchestrator eval --out-dir runs/tiny-eval" in done.stdout
    report = project / "runs/tiny-eval/report.md"
    assert report.exists() and (project / "runs/tiny-eval/report.png").exists()
    source = json.loads((project / "datasets/train_answer_instruct.sources.json").read_text())
    held = source["split"]["val_problems"]
    submission = (project / "runs/tiny-eval/submission.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in submission] == held and len(held) == 6
    for role in ("answer", "evaluate"):  # the split each model was trained without
        manifest = json.loads((project / f"runs/tiny-{role}/manifest.json").read_text())
        assert manifest["data"]["dataset"]["split"]["val_problems"] == held
    assert "$ orchestrator" not in make(project, "-n", "eval", "RECIPE=tiny").stdout  # up to date


# recipe edits that make `orchestrator eval` refuse; `make eval` must refuse before training
EVAL_REFUSALS = [
    pytest.param("RECIPE=tiny", "tiny-answer.yaml", "val_size: 0.2", "val_size: 0.0",
                 "Error: recipes/tiny-answer.yaml: dataset.val_size is 0 for the answer model, so no problems "
                 "are held out", id="tiny-val-size-0"),
    pytest.param("RECIPE=tiny", "tiny-evaluate.yaml", "dataset:", "dataset:\n  seed: 3",
                 "Error: the models would hold out different problems", id="tiny-other-seed"),
    pytest.param("TRAIN=datasets/sample/train.jsonl", None, None, None,  # the shipped answer.yaml holds none out
                 "Error: recipes/answer.yaml: dataset.val_size is 0 for the answer model", id="default-recipes"),
]


@pytest.mark.parametrize("variable, recipe, old, new, error", EVAL_REFUSALS)
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_eval_refuses_before_training(project: Path, variable: str, recipe: str | None, old: str | None,
                                      new: str | None, error: str, dry_run: bool) -> None:
    with_makefile(project)
    if recipe:
        path = project / "recipes" / recipe
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new, 1))

    done = make(project, *(["-n"] if dry_run else []), "eval", variable, timeout=120)
    assert done.returncode != 0
    assert error in done.stderr and "Traceback" not in done.stderr
    assert "$ orchestrator" not in done.stdout  # nothing ran (or was planned): no distil, no training
    assert not (project / "runs").exists()


def test_eval_check_passes_for_the_tiny_recipes(project: Path) -> None:
    with_makefile(project)
    plan = make(project, "-n", "eval", "RECIPE=tiny", timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert "orchestrator train answer --recipe recipes/tiny-answer.yaml" in plan.stdout
    assert "orchestrator eval --out-dir runs/tiny-eval" in plan.stdout
