"""The records an infer run folder holds besides its trace, one typed model each, written and read
here only: run.json (what answered, written by `infer`, read by `score` and `compare`) and
score.json (the gold a run was scored against, written by `score`, read by `compare`).

Each carries a `version`; a file without one is version 0 (the same keys, paths absolute) and
still reads. Paths are kept relative to the project folder (core/common/paths.project_relative),
so a moved project compares its runs. A record that does not parse is one Error line naming the
file and how to write it again: never a traceback, never a silent default.

To add a field: give it a default, as the trace's records do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_json
from orchestrator.core.common.paths import from_project

RUN_FILE, SCORE_FILE = "run.json", "score.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")

    VERSION: ClassVar[int] = 1  # what this orchestrator writes
    version: int = 0  # 0: written before records were versioned


class RunRecord(_Record):
    """run.json: what an infer run was given besides the recipe files, and what answered."""

    pipeline: str | None = None  # the pipeline recipe, project-relative
    overrides: dict[str, Any] = {}
    answer: dict[str, Any] = {}  # the (first) Answer model: agent and overrides
    evaluate: dict[str, Any] = {}
    answers: list[dict[str, Any]] | None = None  # several Answer models: each with its label
    input: str | None = None  # the file answered, project-relative
    limit: int | None = None  # infer --limit
    inference: dict[str, Any] = {}  # the inference settings in effect
    fewshot: dict[str, Any] = {}  # each Answer model's worked examples
    models: dict[str, Any] = {}  # role (answer.<label> with several) -> the model and its recipe


class ScoreRecord(_Record):
    """score.json: the gold a run was scored against (what `compare` uses by default)."""

    submission: str | None = None  # project-relative
    gold: str  # project-relative
    accuracy: float | None = None

    def gold_path(self) -> Path:
        return from_project(self.gold)


R = TypeVar("R", bound=_Record)

# How to write each record again, for the Error line of one that does not read.
_AGAIN = {RUN_FILE: "run `orchestrator infer` into {dir} again to write it (answers given before are read "
                    "back, not asked again), or delete it",
          SCORE_FILE: "run `orchestrator score` on {dir}/submission.jsonl again to write it, or delete it"}


def write_record(folder: Path, record: _Record) -> Path:
    name = RUN_FILE if isinstance(record, RunRecord) else SCORE_FILE
    data = record.model_dump(exclude={"version"})
    return atomic_write_json(folder / name, {"version": type(record).VERSION,
                                             **{k: v for k, v in data.items() if v is not None or k == "limit"}})


def read_record(folder: Path, kind: type[R]) -> R | None:
    """The record of `kind` in `folder`; None when it has none."""
    path = folder / (RUN_FILE if kind is RunRecord else SCORE_FILE)
    again = _AGAIN[path.name].format(dir=folder)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot be read ({e}); {again}") from None
    try:
        record = kind.model_validate(json.loads(text))
    except ValueError as e:  # bad JSON, or a ValidationError
        reason = _first_problem(e)
        raise UserError(f"{path}: not a readable {path.name} ({reason}); {again}") from None
    if record.version > kind.VERSION:
        raise UserError(f"{path}: written by a newer orchestrator (version {record.version}; this one reads up to "
                        f"{kind.VERSION}): upgrade orchestrator, or {again}")
    return record


def _first_problem(e: ValueError) -> str:
    if isinstance(e, ValidationError):
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        return f"{where}: {first['msg']}"
    return f"invalid JSON: {e}"
