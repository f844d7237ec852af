"""The records that cross a stage boundary besides the trace, one typed model each, written and
read here only:

  runs/<name>/manifest.json          Manifest: what a training was made from and what it made
                                     (written by `train`, `recipe import`, a kept training linked in;
                                     read by every stage that uses the adapter, `runs`, `compare`)
  runs/<name>/merged/orchestrator.json  MergedStamp: what a merged model was made from (`merge`;
                                     read by merge, infer, serve, `runs`, `run`)
  <infer run folder>/run.json         RunRecord: what answered (`infer`; read by `score`, `compare`)
  <infer run folder>/score.json       ScoreRecord: the gold a run was scored against (`score`; `compare`)

Each carries a `version`; a file without one is version 0 (the same keys, paths absolute) and
still reads. Paths are kept relative to the project folder (core/common/paths.project_relative),
so a moved project compares its runs. A record that does not parse is one Error line naming the
file and what to do: never a traceback, never a silent default.

To add a field: give it a default, as the trace's records do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_json
from orchestrator.core.common.paths import display, from_project, project_relative

RUN_FILE, SCORE_FILE = "run.json", "score.json"
MANIFEST_FILE = "manifest.json"  # in runs/<name>/ and each runs/<name>/kept/<identity>/
MERGED_FILE = "orchestrator.json"  # in runs/<name>/merged/


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")

    VERSION: ClassVar[int] = 1  # what this orchestrator writes
    FILE: ClassVar[str]
    PATHS: ClassVar[tuple[str, ...]] = ()  # the fields that name a file: written project-relative
    version: int = 0  # 0: written before records were versioned


class Manifest(_Record):
    """manifest.json: a training, as `train` (or `recipe import`) recorded it when it finished."""

    FILE = MANIFEST_FILE
    PATHS = ("recipe_file", "train_yaml", "adapter", "loss_plot", "adopted_from")
    role: str | None = None
    recipe: dict[str, Any] | None = None  # the role recipe as it read (its raw keys)
    recipe_file: str | None = None
    overrides: dict[str, Any] = {}
    train_yaml: str | None = None
    adapter: str | None = None
    adopted_from: str | None = None  # a LlamaBoard training brought back by `recipe import`
    copied_from: str | None = None  # the kept entry or run folder it was linked in from
    resumed_from: str | None = None  # the checkpoint it resumed from
    started: str | None = None  # local time, 2024-05-01T12:00:00
    seconds: float | None = None
    steps: int | None = None
    final_loss: float | None = None
    rewards: dict[str, Any] | None = None  # a preference training's rewards/* at its first and last logged step
    distributed: dict[str, Any] | None = None  # as the training's processes reported it
    launched: str | None = None  # what the start line said: the processes and GPUs asked for
    loss_plot: str | None = None  # LLaMA-Factory's training_loss.png
    data: dict[str, Any] = {}  # files, fixes and counts per source (core/data: training_data)
    inputs: dict[str, Any] | None = None  # what `train` compares to skip an up-to-date adapter
    identity: str | None = None  # the inputs' hash: where the training is kept (core/run_folders/kept.py)
    adapter_hash: str | None = None  # the adapter by content: what infer keys answers on
    versions: dict[str, str] = {}
    git_commit: str | None = None

    def recipe_path(self) -> Path | None:
        return from_project(self.recipe_file) if self.recipe_file else None

    def split(self) -> dict[str, Any] | None:
        """The held-out problems the training was made without (data.dataset.split)."""
        dataset = self.data.get("dataset")
        return dataset.get("split") if isinstance(dataset, dict) else None


class MergedStamp(_Record):
    """merged/orchestrator.json: what a merged (or quantized) model was made from."""

    FILE = MERGED_FILE
    PATHS = ("adapter", "merge_yaml")
    role: str | None = None
    adapter: str | None = None
    merge_yaml: str | None = None
    seconds: float | None = None
    inputs: dict[str, Any] | None = None  # the adapter's identity, the portable merge.yaml, calibration
    identity: str | None = None  # the inputs' hash: what infer keys this model's answers on


class RunRecord(_Record):
    """run.json: what an infer run was given besides the recipe files, and what answered."""

    FILE = RUN_FILE

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

    FILE = SCORE_FILE
    PATHS = ("submission", "gold")

    submission: str | None = None  # project-relative
    gold: str  # project-relative
    accuracy: float | None = None

    def gold_path(self) -> Path:
        return from_project(self.gold)


R = TypeVar("R", bound=_Record)

# How to write each infer record again, for the Error line of one that does not read.
_AGAIN = {RUN_FILE: "run `orchestrator infer` into {dir} again to write it (answers given before are read "
                    "back, not asked again), or delete it",
          SCORE_FILE: "run `orchestrator score` on {dir}/submission.jsonl again to write it, or delete it"}


def write_record(folder: Path, record: _Record) -> Path:
    """`record` as folder/<its file>, atomically, at this version, its paths project-relative."""
    return write_record_file(folder / record.FILE, record)


def write_record_file(path: Path, record: _Record) -> Path:
    data = record.model_dump(exclude={"version"})
    for name in record.PATHS:
        if data.get(name) is not None and Path(data[name]).is_absolute():
            data[name] = project_relative(data[name])
    if isinstance(record, (RunRecord, ScoreRecord)):  # (these leave out what they do not know)
        data = {k: v for k, v in data.items() if v is not None or k == "limit"}
    return atomic_write_json(path, {"version": type(record).VERSION, **data})


def read_record(folder: Path, kind: type[R]) -> R | None:
    """The run.json or score.json of an infer run folder; None when it has none."""
    return read_record_file(folder / kind.FILE, kind, _AGAIN[kind.FILE].format(dir=display(folder)))


def read_record_file(path: Path, kind: type[R], fix: str) -> R | None:
    """The record of `kind` in `path`; None when there is none. One that does not read is a
    UserError: `<path> is unreadable (<why>): <fix>`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        problem = getattr(e, "strerror", None) or type(e).__name__
    else:
        try:
            data = json.loads(text)
        except ValueError:
            problem = "not valid JSON"
        else:
            version = data.get("version", 0) if isinstance(data, dict) else 0
            if not isinstance(data, dict):
                problem = "not a JSON object"
            elif isinstance(version, int) and version > kind.VERSION:  # (its fields may be other than ours)
                problem = f"written by a newer orchestrator, version {version}; this one reads up to {kind.VERSION}"
                fix = f"upgrade orchestrator, or {fix}"
            else:
                try:
                    return kind.model_validate(data)
                except ValidationError as e:
                    first = e.errors()[0]
                    problem = f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"
    raise UserError(f"{display(path)} is unreadable ({problem}): {fix}")


def read_manifest_in(folder: Path, fix: str | None = None) -> Manifest | None:
    """The manifest of a run folder or a kept entry (runs/<name>/kept/<identity>/); None: none."""
    if fix is None:
        fix = (f"delete {display(folder)}: a kept training whose record is lost" if folder.parent.name == "kept"
               else f"train its role again with `--fresh` (its adapter is kept in {display(folder / 'kept')}/)")
    return read_record_file(folder / MANIFEST_FILE, Manifest, fix)


def read_merged_stamp(merged: Path) -> MergedStamp | None:
    """What merge recorded in merged/orchestrator.json; None when there is none."""
    return read_record_file(merged / MERGED_FILE, MergedStamp,
                            f"delete {display(merged)} and `orchestrator merge` makes it again from its adapter")
