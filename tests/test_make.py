"""`make answer-model RECIPE=tiny` for real; make's own rules skip what is up to date."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def make(project: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=project, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "ORCHESTRATOR_HOME": str(project)})


def test_answer_model_then_nothing_to_do_then_stale_recipe(tiny_project: Path) -> None:
    shutil.copy(REPO / "Makefile", tiny_project)
    shutil.copy(REPO / "pyproject.toml", tiny_project)
    os.utime(tiny_project / "pyproject.toml", (0, 0))  # older than the install stamp: no reinstall
    (tiny_project / ".venv").symlink_to(REPO / ".venv")

    first = make(tiny_project, "answer-model", "RECIPE=tiny")
    assert first.returncode == 0, first.stderr[-3000:]
    for step in ("orchestrator distill", "orchestrator dataset answer", "orchestrator train answer", "orchestrator merge answer"):
        assert step in first.stdout
    assert (tiny_project / "runs/tiny-answer/merged/config.json").exists()

    assert make(tiny_project, "-q", "answer-model", "RECIPE=tiny").returncode == 0  # up to date
    again = make(tiny_project, "answer-model", "RECIPE=tiny")
    assert again.returncode == 0 and "orchestrator" not in again.stdout  # trains nothing

    recipe = tiny_project / "recipes" / "tiny-answer.yaml"
    later = time.time() + 60  # edited after the model was trained
    os.utime(recipe, (later, later))
    plan = make(tiny_project, "-n", "answer-model", "RECIPE=tiny").stdout
    assert "orchestrator train answer --recipe recipes/tiny-answer.yaml --fresh" in plan  # stale: from scratch
    assert "orchestrator distill" not in plan  # the teacher is not asked again


def test_eval_from_a_clean_runs_folder(tiny_project: Path) -> None:
    shutil.copy(REPO / "Makefile", tiny_project)
    shutil.copy(REPO / "pyproject.toml", tiny_project)
    os.utime(tiny_project / "pyproject.toml", (0, 0))
    (tiny_project / ".venv").symlink_to(REPO / ".venv")
    assert not (tiny_project / "runs").exists()

    done = make(tiny_project, "eval", "RECIPE=tiny", timeout=1800)  # distil, train and merge both, infer
    assert done.returncode == 0, done.stderr[-3000:]
    assert "orchestrator eval --out-dir runs/tiny-eval" in done.stdout
    report = tiny_project / "runs/tiny-eval/report.md"
    assert report.exists() and (tiny_project / "runs/tiny-eval/report.png").exists()
    source = json.loads((tiny_project / "datasets/train_answer_instruct.sources.json").read_text())
    held = source["split"]["val_problems"]
    submission = (tiny_project / "runs/tiny-eval/submission.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in submission] == held and len(held) == 6
    for role in ("answer", "evaluate"):  # the split each model was trained without
        manifest = json.loads((tiny_project / f"runs/tiny-{role}/manifest.json").read_text())
        assert manifest["data"]["dataset"]["split"]["val_problems"] == held
    assert make(tiny_project, "-q", "eval", "RECIPE=tiny").returncode == 0  # up to date
