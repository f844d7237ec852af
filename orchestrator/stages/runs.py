"""Stage: `orchestrator runs`, every kept experiment of the project (core/run_folders/kept.py) as
one table: its short name, its recipe, the keys it differs by from the recipe as it reads now,
when it was trained, its accuracy where a scored infer or eval used it, its size on disk; then
every infer and eval run kept (core/run_folders/kept_runs.py): its name (what `compare` takes),
the models that answered, its accuracy, its size; and
`orchestrator runs prune`, which removes what the user names (merged copies first)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import display, runs_dir
from orchestrator.core.common.report import text_table
from orchestrator.core.project.identity import flatten
from orchestrator.core.recipes.loading import MADE_OF, load
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.kept import Experiment, experiments, human, named, size
from orchestrator.core.run_folders.records import SCORE_FILE, RunRecord, ScoreRecord, read_merged_stamp, read_record
from orchestrator.core.run_folders.kept_runs import KeptRun, runs as infer_runs


@dataclass
class Row:
    experiment: Experiment
    recipe: str
    differs: list[str]
    accuracy: float | None
    scored_in: str | None
    bytes: int


def _made_of(recipe: dict[str, Any]) -> dict[str, Any]:
    return flatten({k: recipe.get(k) for k in MADE_OF})


def differs(experiment: Experiment) -> tuple[str, list[str]]:
    """(its recipe file, `key then -> now` for each key it was trained with that the file reads otherwise)."""
    recorded, file, path = experiment.manifest.recipe, experiment.manifest.recipe_file, experiment.manifest.recipe_path()
    if recorded is None or path is None or not path.is_file():
        return file or "?", ["(its recipe file is gone)"] if file else []
    try:
        now = load(path, RoleRecipe).raw
    except UserError:
        return display(path), ["(its recipe file no longer loads)"]
    before, after = _made_of(recorded), _made_of(now)
    return display(path), [f"{key} {json.dumps(after.get(key))} -> {json.dumps(before.get(key))}"
                           for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]


def _scored_runs() -> list[tuple[float, Path, RunRecord, float]]:
    """(time, folder, run.json, accuracy) of every scored infer or eval output folder, newest first."""
    out = []
    for score in runs_dir().glob(f"*/{SCORE_FILE}") if runs_dir().is_dir() else []:
        scored, record = read_record(score.parent, ScoreRecord), read_record(score.parent, RunRecord)
        if scored is not None and scored.accuracy is not None and record is not None:
            out.append((score.stat().st_mtime, score.parent, record, scored.accuracy))
    return sorted(out, key=lambda item: -item[0])


def _uses(record: RunRecord, experiment: Experiment) -> bool:
    """Whether an infer run's models include this training (served as its adapter or as its merge)."""
    stamp = read_merged_stamp(experiment.folder / "merged")
    marks = {experiment.manifest.adapter_hash or "-", (stamp.identity if stamp else None) or "-"}
    return any(isinstance(m, dict) and str(m.get("identity", "")).endswith(tuple(marks)) for m in record.models.values())


def scored_runs_of(name: str) -> list[Path]:
    """The scored infer/eval output folders that used the experiment `name`, newest first."""
    experiment = named(name)
    if experiment is None:
        return []
    return [folder for _, folder, record, _ in _scored_runs() if _uses(record, experiment)]


def rows() -> list[Row]:
    scored = _scored_runs()
    out = []
    for experiment in experiments():
        recipe, diff = differs(experiment)
        used = next(((folder, acc) for _, folder, record, acc in scored if _uses(record, experiment)), None)
        parts = [experiment.folder / p for p in ("adapter", "merged")] if experiment.current else [experiment.folder]
        out.append(Row(experiment, recipe, diff, used[1] if used else None, display(used[0]) if used else None,
                       sum(size(p) for p in parts if p.exists())))
    return out


def table(found: list[Row]) -> str:
    if not found:
        return "no trained models kept yet: `make answer-model` trains one"
    head = ["NAME", "RECIPE", "DIFFERS FROM THE RECIPE NOW", "TRAINED", "ACCURACY", "SIZE"]
    body = [[r.experiment.name + ("" if r.experiment.current else " (kept)"), r.recipe,
             "; ".join(r.differs) or "-", r.experiment.when.replace("T", " "),
             f"{r.accuracy:.4f} ({r.scored_in})" if r.accuracy is not None else "-", human(r.bytes)] for r in found]
    return "\n".join(text_table(head, body, align="l" * len(head)))


@dataclass
class RunRow:
    run: KeptRun
    models: str  # the served models that answered, by their run folder's name
    accuracy: float | None
    bytes: int


def run_rows() -> list[RunRow]:
    out = []
    for run in infer_runs():
        record, scored = read_record(run.folder, RunRecord), read_record(run.folder, ScoreRecord)
        models = record.models if record else {}
        names = [Path(str(m.get("manifest") or "")).parent.name or str(m.get("model") or "?")
                 for m in models.values() if isinstance(m, dict)]
        items = [p for p in run.folder.iterdir() if p.name != "kept"] if run.current else [run.folder]
        out.append(RunRow(run, " + ".join(names) or "-", scored.accuracy if scored else None,
                          sum(size(p) for p in items)))
    return out


def runs_table(found: list[RunRow]) -> str:
    if not found:
        return ""
    head = ["RUN", "MODELS", "ACCURACY", "SIZE"]
    body = [[r.run.name + ("" if r.run.current else " (kept)"), r.models,
             f"{r.accuracy:.4f}" if r.accuracy is not None else "-", human(r.bytes)] for r in found]
    return "\n".join(text_table(head, body, align="l" * len(head)))


@dataclass
class Pruned:
    path: Path
    bytes: int


def prune(*, names: list[str], older_than_days: float | None, keep_last: int | None, all_but_current: bool,
          merged_only: bool, dry_run: bool = False) -> list[Pruned]:
    """Remove the kept experiments the user names (by name, by age, beyond the newest N of each
    run folder, or every one that is not current): their merged copies first (`merged_only`: only
    those). A current run folder's training is never removed here (the recipe reads it now)."""
    kept = [e for e in experiments() if not e.current]
    chosen: list[Experiment] = []
    for name in names:
        experiment = named(name)
        if experiment is None:
            raise UserError(f"{name}: no such experiment; `orchestrator runs` lists them")
        if experiment.current:
            raise UserError(f"{name} is the model of its recipe as it reads now: edit the recipe (or remove "
                            f"{display(experiment.folder)}) instead")
        chosen.append(experiment)
    if older_than_days is not None:
        limit = time.time() - older_than_days * 86400
        chosen += [e for e in kept if (e.folder / "manifest.json").stat().st_mtime < limit]
    if keep_last is not None:
        by_folder: dict[Path, list[Experiment]] = {}
        for e in kept:
            by_folder.setdefault(e.folder.parent.parent, []).append(e)
        for group in by_folder.values():
            group.sort(key=lambda e: (e.folder / "manifest.json").stat().st_mtime, reverse=True)
            chosen += group[keep_last:]
    if all_but_current:
        chosen += kept
    out: list[Pruned] = []
    seen: set[Path] = set()
    for experiment in chosen:
        if experiment.folder in seen:
            continue
        seen.add(experiment.folder)
        target = experiment.folder / "merged" if merged_only else experiment.folder
        if target.exists():
            out.append(Pruned(target, size(target)))
    out.sort(key=lambda p: p.path.name != "merged")  # merged copies first
    for pruned in out if not dry_run else []:
        shutil.rmtree(pruned.path)
    return out
