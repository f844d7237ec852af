"""Atomic writes (core/common/files.py)."""

from __future__ import annotations

from pathlib import Path


from orchestrator.core.common.files import atomic_write_text
from orchestrator.core.recipes.loading import load_role


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a" / "out.txt", "done\n")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["out.txt"]


def test_a_recipes_files_are_its_extends_chain(project: Path) -> None:
    loaded = load_role("answer", "recipes/tiny-answer.yaml", ["train.lora_rank=4"])
    assert [p.name for p in loaded.files()] == ["answer.yaml", "tiny-answer.yaml"]
