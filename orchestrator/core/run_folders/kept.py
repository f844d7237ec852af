"""Every training kept, by what it was made from.

runs/<name>/ holds the training of the recipe as it reads now (adapter/, manifest.json, merged/,
its logs); every other training of that run folder (the recipe before an edit, a --fresh one)
lies in runs/<name>/kept/<identity>/, with the same files. The identity is a hash of the
training's inputs by content (the portable train.yaml, the datasets, the base model: see
core/run_folders/trained.py `training_inputs`), recorded in the manifest, so a moved project keeps every
identity. A training moves between the two places by renames (nothing copied, nothing deleted):
an edited recipe moves the current one aside, and going back moves it back and trains nothing.
A training found in another run folder (a --set variant, runs/<name>@<variant>/, made the same
model) is copied by hard links: free on disk.

Merged and quantized copies are bounded (keep.merged of the role recipe, a 7B merge is ~15 GB);
an entry without its merged copy is merged again from its adapter when it comes back.
A move interrupted half-way (runs/<name>/kept/<identity>.moving/) is finished by the next command.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from orchestrator.core.common.files import atomic_write_json, read_json_object
from orchestrator.core.common.paths import runs_dir
from orchestrator.core.run_folders.records import Manifest, read_manifest_in, write_record_file
from orchestrator.core.run_folders.role_paths import ADAPTER_FILE, RolePaths

KEPT = "kept"
STARTED = "training.json"  # {"identity": ...}: what the training in progress in runs/<name>/ is made from
MERGED_REMOVED = "merged.removed.json"  # an entry whose merged copy keep.merged removed: {"bytes": N}
# what a training leaves in its run folder, in the order it moves away (the manifest first: the
# folder claims no training once it is gone; it comes back last, once the adapter is there)
ITEMS = ("manifest.json", STARTED, "adapter", "merged", MERGED_REMOVED, "train.log", "merge.log", "calibration.jsonl")


def kept_dir(paths: RolePaths) -> Path:
    return paths.run_dir / KEPT


def entry_dir(paths: RolePaths, identity: str) -> Path:
    return kept_dir(paths) / identity



def recorded_identity(folder: Path) -> str | None:
    """The identity of the training in `folder` (a run folder or a kept entry): its manifest's,
    else the one recorded when it started (an unfinished training); None: not known."""
    manifest = read_manifest_in(folder)
    ident = manifest.identity if manifest and manifest.identity else read_json_object(folder / STARTED).get("identity")
    return ident if isinstance(ident, str) else None


def finished(folder: Path) -> bool:
    return (folder / "adapter" / ADAPTER_FILE).is_file() and (folder / "manifest.json").is_file()


def record_start(paths: RolePaths, identity: str) -> None:
    atomic_write_json(paths.run_dir / STARTED, {"identity": identity})


def move_items(src: Path, dst: Path, items: tuple[str, ...] = ITEMS) -> None:
    """Each of `items` from `src` into `dst` (renames): the first one first into a .moving entry
    (the folder claims nothing once it is gone), last anywhere else (it claims the rest is there)."""
    dst.mkdir(parents=True, exist_ok=True)
    order = items if dst.name.endswith(".moving") else (*items[1:], items[0])
    for name in order:
        if (src / name).exists():
            if (dst / name).exists():
                shutil.rmtree(dst / name) if (dst / name).is_dir() else (dst / name).unlink()
            (src / name).rename(dst / name)


def finish_moves(paths: RolePaths) -> None:
    """A move cut short (kept/<identity>.moving/) completed: it holds the folder's last training."""
    if not kept_dir(paths).is_dir():
        return
    for moving in kept_dir(paths).glob("*.moving"):
        settle(moving, ITEMS)


def settle(moving: Path, items: tuple[str, ...]) -> Path:
    """A kept/<identity>.moving/ entry made kept/<identity>/: renamed, or moved item by item into
    an entry already there (the newer files win)."""
    target = moving.with_name(moving.name.removesuffix(".moving"))
    if target.exists():
        move_items(moving, target, items)
        shutil.rmtree(moving, ignore_errors=True)
    else:
        moving.rename(target)
    return target


def keep_items(src: Path, target: Path, items: tuple[str, ...]) -> Path:
    """`items` of `src` into the entry `target` by renames, through target.moving/ (a move cut
    short is settled by the next command)."""
    moving = target.with_name(target.name + ".moving")
    move_items(src, moving, items)
    return settle(moving, items)


def keep(paths: RolePaths, identity: str) -> Path:
    """Move the run folder's training into kept/<identity>/ (an entry already there is replaced
    by it only item by item: the newer files win)."""
    return keep_items(paths.run_dir, entry_dir(paths, identity), ITEMS)


def restore(paths: RolePaths, identity: str) -> None:
    """kept/<identity>/ back into the run folder (the manifest last), its entry removed."""
    source = entry_dir(paths, identity)
    move_items(source, paths.run_dir)
    shutil.rmtree(source, ignore_errors=True)


def _link_tree(src: Path, dst: Path) -> None:
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:  # another file system: a copy
            shutil.copy2(a, b)
    shutil.copytree(src, dst, copy_function=link)


def run_folders() -> list[Path]:
    root = runs_dir()
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def entries(run_dir: Path) -> list[Path]:
    folder = run_dir / KEPT
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.endswith(".moving")) if folder.is_dir() else []


def find(identity: str, besides: Path) -> Path | None:
    """A finished training of `identity` in another run folder, current or kept."""
    for run_dir in run_folders():
        if run_dir.resolve() == besides.resolve():
            continue
        for folder in (run_dir, *entries(run_dir)):
            if finished(folder) and recorded_identity(folder) == identity:
                return folder
    return None


def copy_in(source: Path, paths: RolePaths) -> None:
    """A finished training from another run folder into this one, by hard links (the manifest last)."""
    tmp = paths.run_dir / ".adapter.copy"
    shutil.rmtree(tmp, ignore_errors=True)
    _link_tree(source / "adapter", tmp)
    tmp.rename(paths.adapter)
    manifest = read_manifest_in(source) or Manifest()
    write_record_file(paths.manifest, manifest.model_copy(update={"adapter": str(paths.adapter), "copied_from": source.name}))


def size(path: Path) -> int:
    """Bytes on disk under `path` (a hard-linked file counted where it is met first)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@dataclass
class Removed:
    path: Path
    bytes: int


def bound_merged(paths: RolePaths, limit: int, say: Callable[[str], None] | None = None) -> list[Removed]:
    """Keep at most `limit` merged copies in kept/ (the newest); the others are removed, their
    entry noting it (merge rebuilds one from its adapter when it is needed again)."""
    with_merged = [e for e in entries(paths.run_dir) if (e / "merged").is_dir()]
    with_merged.sort(key=lambda e: (e / "merged").stat().st_mtime, reverse=True)
    removed = []
    for entry in with_merged[limit:]:
        freed = size(entry / "merged")
        shutil.rmtree(entry / "merged")
        atomic_write_json(entry / MERGED_REMOVED, {"bytes": freed})
        removed.append(Removed(entry / "merged", freed))
        if say:
            say(f"removed the merged copy {entry.name}/merged ({human(freed)}): keep.merged {limit}; "
                "merged again from its adapter if it is needed")
    return removed


def human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


# ---------------------------------------------------------------- the experiments, by name


@dataclass
class Experiment:
    """One kept training: the run folder's current one (named as its folder: tiny-answer,
    tiny-answer@1a2b3c4d for a --set variant) or a kept one (tiny-answer~<identity>)."""

    name: str
    folder: Path  # the run folder, or its kept/<identity>/ entry
    manifest: Manifest
    current: bool

    @property
    def identity(self) -> str:
        return self.manifest.identity or ""

    @property
    def when(self) -> str:
        return self.manifest.started or ""


def experiments() -> list[Experiment]:
    """Every finished training of the project, the current one of each run folder first."""
    out = []
    for run_dir in run_folders():
        if finished(run_dir):
            out.append(Experiment(run_dir.name, run_dir, read_manifest_in(run_dir) or Manifest(), True))
        for entry in entries(run_dir):
            if finished(entry):
                out.append(Experiment(f"{run_dir.name}~{entry.name[:8]}", entry, read_manifest_in(entry) or Manifest(), False))
    return out


class _Named(Protocol):
    name: str
    folder: Path
    current: bool


N = TypeVar("N", bound=_Named)


def by_name(found: Iterable[N], name: str) -> N | None:
    """What a short name of `orchestrator runs` names: a run folder by its name, a kept entry as
    <folder>~<the first digits of its identity>."""
    folder, _, ident = name.partition("~")
    for item in found:
        if item.name == name or (ident and not item.current and item.folder.parent.parent.name == folder
                                 and item.folder.name.startswith(ident)):
            return item
    return None


def named(name: str) -> Experiment | None:
    """The experiment a short name names (a kept one by the first digits of its identity)."""
    return by_name(experiments(), name)


def check_out(name: str) -> Path | None:
    """A kept experiment's training linked into runs/<name>/ (its own run folder, as a --set variant
    has one), so serve, infer, merge and package use it as they use any; None: not a kept one."""
    experiment = named(name)
    if experiment is None or experiment.current:
        return None
    paths = RolePaths(runs_dir() / experiment.name)
    if not finished(paths.run_dir):
        paths.run_dir.mkdir(parents=True, exist_ok=True)
        copy_in(experiment.folder, paths)
    return paths.run_dir
