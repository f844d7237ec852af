"""Which models answer (orchestrator/core/serving/inference_models.py): a recipe flag's value is a
name of `orchestrator runs` (kept as the name, so run.json records it) or a file (made absolute)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.core.serving.inference_models import recipe_given


@pytest.mark.parametrize("given, absolute", [
    ("recipes/tiny-answer.yaml", True),       # a file, relative to the working directory
    ("my-answer.yml", True),                  # a recipe file's suffix, even before it exists
    ("tiny-answer@1a2b3c4d", False),          # a --set variant's run folder, by name
    ("tiny-answer~5e6f7a8b", False),          # a kept training, by name
    ("tiny-answer@00000000", True),           # no such run: a file (whose absence load names)
])
def test_a_recipe_flag_is_a_run_name_or_a_file(project: Path, given: str, absolute: bool) -> None:
    manifest = json.dumps({"role": "answer", "recipe": {"name": "tiny-answer"}})
    for run in ("runs/tiny-answer@1a2b3c4d", "runs/tiny-answer/kept/5e6f7a8b90"):
        (project / run).mkdir(parents=True)
        (project / run / "manifest.json").write_text(manifest, encoding="utf-8")
    got = recipe_given(given)
    assert got == (str((project / given).resolve()) if absolute else given)


def test_a_file_of_a_run_folders_name_is_the_file(project: Path) -> None:
    (project / "tiny-answer").write_text("extends: recipes/tiny-answer.yaml\n", encoding="utf-8")
    assert recipe_given("tiny-answer") == str(project / "tiny-answer")
