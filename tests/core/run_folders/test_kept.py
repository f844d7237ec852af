"""Every training kept by identity (core/run_folders/kept.py): moved aside and back by renames,
found in another run folder and linked, a move cut short finished, merged copies bounded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.core.run_folders.kept import (
    MERGED_REMOVED,
    bound_merged,
    copy_in,
    entries,
    entry_dir,
    find,
    finish_moves,
    finished,
    keep,
    recorded_identity,
    record_start,
    restore,
)
from orchestrator.core.run_folders.role_paths import RolePaths


def _trained(run: Path, identity: str, weights: bytes = b"w", merged: bool = False) -> RolePaths:
    paths = RolePaths(run)
    paths.adapter.mkdir(parents=True)
    (paths.adapter / "adapter_model.safetensors").write_bytes(weights)
    paths.manifest.write_text(json.dumps({"identity": identity, "final_loss": 0.5}))
    paths.log.write_text("log of " + identity)
    if merged:
        paths.merged.mkdir()
        (paths.merged / "model.safetensors").write_bytes(b"m" * 100)
    return paths


def _listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_kept_and_restored_by_renames_with_every_file(project: Path) -> None:
    paths = _trained(project / "runs" / "tiny-answer", "aaaa", merged=True)
    inode = (paths.adapter / "adapter_model.safetensors").stat().st_ino
    (paths.run_dir / "train.yaml").write_text("the recipe as it reads")  # rendered per command: stays
    kept = keep(paths, "aaaa")
    assert kept == entry_dir(paths, "aaaa") and finished(kept) and recorded_identity(kept) == "aaaa"
    assert _listing(kept) == ["adapter/adapter_model.safetensors", "manifest.json", "merged/model.safetensors", "train.log"]
    assert (kept / "adapter" / "adapter_model.safetensors").stat().st_ino == inode  # moved, not copied
    assert not paths.adapter.exists() and not paths.manifest.exists() and (paths.run_dir / "train.yaml").exists()
    restore(paths, "aaaa")
    assert finished(paths.run_dir) and (paths.merged / "model.safetensors").exists()
    assert not kept.exists() and entries(paths.run_dir) == []


def test_an_unfinished_training_is_kept_under_the_identity_it_started_with(project: Path) -> None:
    paths = RolePaths(project / "runs" / "tiny-answer")
    (paths.adapter / "checkpoint-2").mkdir(parents=True)
    record_start(paths, "bbbb")
    assert recorded_identity(paths.run_dir) == "bbbb" and not finished(paths.run_dir)
    kept = keep(paths, "bbbb")
    assert _listing(kept) == ["training.json"] and (kept / "adapter" / "checkpoint-2").is_dir()
    restore(paths, "bbbb")
    assert (paths.adapter / "checkpoint-2").is_dir() and recorded_identity(paths.run_dir) == "bbbb"


def test_a_move_cut_short_is_finished_by_the_next_command(project: Path) -> None:
    paths = _trained(project / "runs" / "tiny-answer", "cccc")
    moving = entry_dir(paths, "cccc").with_name("cccc.moving")
    moving.mkdir(parents=True)
    paths.manifest.rename(moving / "manifest.json")  # the manifest went first, then the process died
    finish_moves(paths)
    assert not moving.exists() and (entry_dir(paths, "cccc") / "manifest.json").exists()
    assert not finished(paths.run_dir)  # the folder claims no training: the next train judges it again


def test_a_training_in_another_run_folder_is_found_and_linked(project: Path) -> None:
    variant = _trained(project / "runs" / "tiny-answer@1234abcd", "dddd", weights=b"trained for hours")
    paths = RolePaths(project / "runs" / "tiny-answer")
    paths.run_dir.mkdir(parents=True)
    assert find("dddd", paths.run_dir) == variant.run_dir and find("eeee", paths.run_dir) is None
    assert find("dddd", variant.run_dir) is None  # not in its own folder
    copy_in(variant.run_dir, paths)
    weights = paths.adapter / "adapter_model.safetensors"
    assert weights.read_bytes() == b"trained for hours"
    assert os.stat(weights).st_ino == os.stat(variant.adapter / "adapter_model.safetensors").st_ino  # no disk
    manifest = json.loads(paths.manifest.read_text())
    assert manifest["identity"] == "dddd" and manifest["copied_from"] == "tiny-answer@1234abcd"
    kept = keep(variant, "dddd")  # a kept entry is found too
    shutil_free = RolePaths(project / "runs" / "other")
    assert find("dddd", shutil_free.run_dir) in (paths.run_dir, kept)


@pytest.mark.parametrize("limit, left", [(0, []), (1, ["e3"]), (2, ["e2", "e3"]), (5, ["e1", "e2", "e3"])])
def test_merged_copies_beyond_keep_merged_are_removed_oldest_first(project: Path, limit: int, left: list[str]) -> None:
    paths = RolePaths(project / "runs" / "tiny-answer")
    for i, ident in enumerate(("e1", "e2", "e3")):
        _trained(paths.run_dir, ident, merged=True)
        os.utime(paths.merged, (1000 + i, 1000 + i))
        keep(paths, ident)
    said: list[str] = []
    removed = bound_merged(paths, limit, said.append)
    assert sorted(e.name for e in entries(paths.run_dir) if (e / "merged").is_dir()) == left
    assert len(removed) == len(said) == 3 - len(left)
    for entry in entries(paths.run_dir):
        assert finished(entry)  # adapters are always kept
        assert (entry / MERGED_REMOVED).exists() == (entry.name not in left)
    if said:
        assert said[0].startswith("removed the merged copy e") and "(100 B): keep.merged" in said[0]
