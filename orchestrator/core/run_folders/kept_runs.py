"""Every infer and eval run kept, by what it was made from.

An infer or eval folder the planner writes (runs/tiny-infer/, runs/tiny-eval/, a --set variant's
runs/tiny-infer@<hash>/) holds the run of the recipes as they read now; `run.identity.json` in it
records what that run is made of: the identity the planner computed for its infer or eval stage
(core/project/plan.py: the served models by content, the inference settings, the data files).
Before a run of another identity goes into the folder, the run there (submission, trace, ledger,
run.json, report, score.json: every file but kept/) moves by renames into kept/<its identity>/,
with the planner's records of the stages that wrote it (records.json), and a copy of its ledgers
(stage1.jsonl, trace.jsonl: keyed by model, prompt and sampling) stays for the new run, which so
asks nothing it asked before; a run of an identity kept there comes back the same way, records and
all, so the planner finds it up to date and asks nothing. The mechanics are those of the trainings' (run_folders/kept.py): renames only, the
identity file first out and last in, a move cut short (kept/<identity>.moving/) finished next time.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.common.files import atomic_write_json, read_json_object
from orchestrator.core.common.paths import project_root, runs_dir
from orchestrator.core.project.identity import file_identity, relative
from orchestrator.core.project.plan import Record, read_record, records_dir, write_record
from orchestrator.core.run_folders.kept import KEPT, by_name, keep_items, move_items, settle
from orchestrator.core.run_folders.locks import run_lock

IDENTITY = "run.identity.json"  # {"identity": ...}: what the run in this folder is made of
RECORDS = "records.json"  # in a kept entry: the planner's records of the stages that wrote its files
LOCK = ".lock"  # the folder's own (run_folders/locks.py): stays
# the ledgers infer reads what it asked before from (keyed by model, prompt and sampling): a copy of
# the kept run's stays for the next run, which asks nothing it asked before (another LIMIT, more votes)
LEDGERS = ("stage1.jsonl", "trace.jsonl")


def _items(folder: Path) -> tuple[str, ...]:
    """What a run leaves in its folder, the identity file first."""
    names = sorted(p.name for p in folder.iterdir() if p.name not in (KEPT, IDENTITY, LOCK)) if folder.is_dir() else []
    return (IDENTITY, *names)


def recorded_identity(folder: Path) -> str | None:
    ident = read_json_object(folder / IDENTITY).get("identity")
    return ident if isinstance(ident, str) else None


def _records_of(folder: Path) -> list[Record]:
    """The planner's records of the stages whose outputs lie in `folder` (its infer or eval, its score)."""
    prefix = relative(folder) + "/"
    found = [read_record(p.stem) for p in sorted(records_dir().glob("*.json"))] if records_dir().is_dir() else []
    return [r for r in found if r is not None and any(path.startswith(prefix) for path in r.outputs)]


def _current(folder: Path, stage: str) -> str | None:
    """The identity of the run in `folder`: as recorded, else (a folder from before run.identity.json)
    its stage record's when the files are those it made; None: not known (left where it is)."""
    record = read_record(stage)
    made_here = record is not None and all(ident is None or file_identity(project_root() / path) == ident
                                           for path, ident in record.outputs.items())
    ident = recorded_identity(folder)
    if ident is not None:
        # a finished run changed by a hand-typed command since is no longer what its identity says
        return None if record is not None and record.identity == ident and not made_here else ident
    return record.identity if record is not None and made_here else None


def _finish_moves(folder: Path) -> None:
    """A move into kept/ cut short: the files still in the folder are the moving run's (its identity
    file went first), so they follow it, and the entry takes its name."""
    kept = folder / KEPT
    for moving in sorted(kept.glob("*.moving")) if kept.is_dir() else []:
        if not (folder / IDENTITY).exists() and (rest := _items(folder)[1:]):
            move_items(folder, moving, rest)
        settle(moving, _items(moving))


def keep(folder: Path, identity: str) -> Path:
    """The run in `folder` (and its stages' records) into kept/<identity>/, by renames."""
    atomic_write_json(folder / RECORDS, {r.stage: r.model_dump(mode="json") for r in _records_of(folder)})
    return keep_items(folder, folder / KEPT / identity, _items(folder))


def restore(folder: Path, identity: str) -> bool:
    """kept/<identity>/ back into `folder` (its identity file last) and its records back in
    runs/.records/; False when no such run is kept."""
    entry = folder / KEPT / identity
    if not entry.is_dir():
        return False
    move_items(entry, folder, _items(entry))
    shutil.rmtree(entry, ignore_errors=True)
    for data in read_json_object(folder / RECORDS).values():
        write_record(Record.model_validate(data))
    (folder / RECORDS).unlink(missing_ok=True)
    return True


@dataclass
class Prepared:
    kept: Path | None = None  # where the folder's previous run went
    restored: bool = False  # the run of this identity came back from kept/


def prepare(folder: Path, identity: str, stage: str) -> Prepared:
    """Before the stage `stage` of `identity` runs into `folder`: a run there of another identity
    kept, a kept run of this identity brought back, the identity recorded (an interrupted run
    resumes under it)."""
    folder.mkdir(parents=True, exist_ok=True)
    with run_lock(folder, "orchestrator run"):  # (refused while a command writes the folder)
        return _prepare(folder, identity, stage)


def _prepare(folder: Path, identity: str, stage: str) -> Prepared:
    out = Prepared()
    _finish_moves(folder)
    current = _current(folder, stage)
    files = len(_items(folder)) > 1
    if current is not None and current != identity and files:
        out.kept = keep(folder, current)
    # (files of no known identity, a hand-typed command's, stay: the stage runs over them as it would)
    if current != identity and (out.kept is not None or not files):
        out.restored = restore(folder, identity)
    if out.kept is not None and not out.restored:
        for name in LEDGERS:
            if (out.kept / name).is_file():
                shutil.copy2(out.kept / name, folder / name)
    if not out.restored:
        atomic_write_json(folder / IDENTITY, {"identity": identity})
    return out


def kept_entry(folder: Path, identity: str) -> Path | None:
    entry = folder / KEPT / identity
    return entry if entry.is_dir() else None


# ---------------------------------------------------------------- the runs, by name


@dataclass
class KeptRun:
    """One infer or eval run: a folder's current one (named as its folder: tiny-infer,
    tiny-infer@1a2b3c4d) or a kept one (tiny-infer~<identity>)."""

    name: str
    folder: Path  # the run folder, or its kept/<identity>/ entry
    current: bool


def _is_run(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("submission.jsonl", "run.json", IDENTITY))


def runs() -> list[KeptRun]:
    """Every infer or eval run of the project (a folder with a submission or run.json), each folder's
    current one first; a training's run folder is not one."""
    root = runs_dir()
    out: list[KeptRun] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []:
        if (folder / "manifest.json").is_file() or (folder / "adapter").is_dir():
            continue
        if _is_run(folder):
            out.append(KeptRun(folder.name, folder, True))
        kept = folder / KEPT
        for entry in sorted(p for p in kept.iterdir() if p.is_dir() and not p.name.endswith(".moving")) if kept.is_dir() else []:
            if _is_run(entry):
                out.append(KeptRun(f"{folder.name}~{entry.name[:8]}", entry, False))
    return out


def run_named(name: str) -> KeptRun | None:
    """The run a short name names (a kept one by the first digits of its identity)."""
    return by_name(runs(), name)