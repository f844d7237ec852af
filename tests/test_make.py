"""`make answer-model RECIPE=tiny` for real; make's own rules skip what is up to date."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def make(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=project, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "ORCHESTRATOR_HOME": str(project)})


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
