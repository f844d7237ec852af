"""Atomic writes and make's timestamps (core/common/files.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orchestrator.core.common.files import atomic_write_text, mark_current
from orchestrator.core.recipes.loading import load_role


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a" / "out.txt", "done\n")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["out.txt"]


# (seconds the newest input lies ahead of the clock, whether the mark follows it)
AHEAD = [
    pytest.param(-30, False, id="inputs-in-the-past: now"),
    pytest.param(120, True, id="an-input-ahead-of-the-clock: its time"),
]


@pytest.mark.parametrize("ahead, follows", AHEAD)
def test_mark_current_is_never_older_than_its_inputs(tmp_path: Path, ahead: int, follows: bool) -> None:
    target, recipe, missing = tmp_path / "adapter.bin", tmp_path / "recipe.yaml", tmp_path / "gone.json"
    target.write_bytes(b"x")
    recipe.write_text("name: x\n")
    saved = time.time() + ahead
    os.utime(recipe, (saved, saved))
    os.utime(target, (0, 0))
    before = time.time_ns()
    mark_current(target, [recipe, missing])
    mark = target.stat().st_mtime_ns
    assert mark >= recipe.stat().st_mtime_ns and mark >= before  # make sees it current
    assert (mark == recipe.stat().st_mtime_ns) is follows


def test_a_recipes_files_are_its_extends_chain(project: Path) -> None:
    loaded = load_role("answer", "recipes/tiny-answer.yaml", ["train.lora_rank=4"])
    assert [p.name for p in loaded.files()] == ["answer.yaml", "tiny-answer.yaml"]
