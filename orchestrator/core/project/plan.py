"""A plan: the stages a target needs, in order, each with its inputs by content and the reason
it runs (or `up to date`).

A stage that finishes leaves a record (runs/.records/<stage>.json: its identity, its inputs, what
it made, by content); a stage runs when it has no record (never run, or interrupted before it
finished: the stage itself resumes), when its inputs differ from the record's (each difference
named), when what it made is gone or was changed by another command, or when a stage before it
runs (its outputs are this stage's inputs). Timestamps decide nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator.core.common.files import atomic_write_text
from orchestrator.core.common.paths import runs_dir
from orchestrator.core.project.identity import Input, Inputs, changes, identity

UP_TO_DATE = "up to date"


class Record(BaseModel):
    """What a finished stage was made from and what it made (runs/.records/<stage>.json)."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    identity: str
    inputs: dict[str, Input]
    outputs: dict[str, str | None]  # project-relative path -> its identity (None: not there)
    command: list[str]  # the `orchestrator` command that made it


def records_dir() -> Path:
    return runs_dir() / ".records"


def record_path(stage: str) -> Path:
    return records_dir() / f"{stage}.json"


def read_record(stage: str) -> Record | None:
    """The stage's record; None when there is none, or one this version cannot read (the stage
    then runs, and judges by its own content check what is left to do)."""
    try:
        return Record.model_validate(json.loads(record_path(stage).read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError):
        return None


def write_record(record: Record) -> None:
    atomic_write_text(record_path(record.stage), record.model_dump_json(indent=2) + "\n")


@dataclass
class Stage:
    """One step of a plan: an `orchestrator` command and what it reads and makes."""

    id: str  # unique in a project: train-tiny-answer, dataset-train_answer_instruct, infer-tiny-infer
    command: list[str]  # `orchestrator` arguments, as a person would type them
    inputs: Callable[[], Inputs]  # computed when the stage is judged: after the stages before it ran
    outputs: list[str] = field(default_factory=list)  # project-relative paths it makes
    after: list[str] = field(default_factory=list)  # stage ids whose outputs it reads
    always: bool = False  # no record: runs every time (check, webui)
    present: bool = False  # up to date as soon as its outputs exist (a base model, fetched or built)
    keeps: str = ""  # the folder whose runs it keeps by its identity (infer, eval: core/run_folders/kept_runs.py)


@dataclass
class Decision:
    stage: Stage
    runs: bool
    reasons: list[str]
    inputs: Inputs = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.stage.id}: " + ("; ".join(self.reasons) if self.runs else UP_TO_DATE)


def judge(stage: Stage, running: set[str], output_identity: Callable[[str], str | None]) -> Decision:
    """Whether `stage` runs, and why. `running`: the ids of the stages before it that run."""
    if stage.always:
        return Decision(stage, True, ["runs every time"])
    outputs = {path: output_identity(path) for path in stage.outputs}
    missing = [path for path, ident in outputs.items() if ident is None]
    if stage.present:
        return Decision(stage, bool(missing), [f"{path} is not there" for path in missing])
    inputs = stage.inputs()
    record = read_record(stage.id)
    reasons = [f"after {up}, whose output it reads" for up in stage.after if up in running]
    if record is None:
        reasons.append("no record of a finished run (never run, or interrupted: it resumes)")
    else:
        reasons += changes(record.inputs, inputs)
        reasons += [f"{path} is not there" for path in missing]
        reasons += [f"{path} was changed by another command since this stage made it" for path, ident in outputs.items()
                    if ident is not None and record.outputs.get(path) not in (None, ident)]
    return Decision(stage, bool(reasons), reasons, inputs)


def finished(decision: Decision, output_identity: Callable[[str], str | None]) -> Record:
    """The record of a stage that ran to the end (or was judged up to date), written."""
    stage = decision.stage
    inputs = decision.inputs or stage.inputs()
    record = Record(stage=stage.id, identity=identity(inputs), inputs=inputs,
                    outputs={path: output_identity(path) for path in stage.outputs}, command=stage.command)
    write_record(record)
    return record
