"""Where training questions come from: `data.train` (gold) and `data.extra_train` files
(pseudo-labels from `orchestrator pseudo-label`, or any other labelled competition file).

distill and dataset read them through `training_sources`, so both count questions per file,
and a question that two files label is an error, never a silent overwrite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import datasets_dir, project_root
from orchestrator.core.data.competition import Question, read_reporting
from orchestrator.core.data.fixes import fixes_path, read_training
from orchestrator.core.data.mixed_datasets import mixed_counts
from orchestrator.core.recipes.schema import DataSection, RoleRecipe

GOLD, PSEUDO, EXTRA_TRAIN = "gold", "pseudo-labels", "extra"  # the kinds of file (data.train, data.extra_train)


def provenance_path(file: str | Path) -> Path:
    """The provenance file `pseudo-label` writes beside its output: x.jsonl -> x.provenance.jsonl."""
    file = Path(file)
    return file.with_name(f"{file.stem}.provenance.jsonl")


@dataclass
class TrainingSource:
    """One file of training questions: data.train (gold) or one of data.extra_train."""

    file: str  # as the recipe (or --input) names it
    key: str  # data.train, data.extra_train[i] or --input
    kind: str  # gold, pseudo-labels or extra
    questions: list[Question]
    fixes: dict[str, Any] | None = None  # data.fixes as applied to the gold file (its record)

    def describe(self) -> dict[str, Any]:
        return {"file": self.file, "key": self.key, "kind": self.kind, "questions": len(self.questions)}


def _kind(path: Path) -> str:
    return PSEUDO if provenance_path(path).exists() else EXTRA_TRAIN


def training_sources(
    data: DataSection, input_path: str | Path | None = None, stage: str = "", skip_invalid: bool = False
) -> list[TrainingSource]:
    """The gold training file (`input_path` or data.train, corrected by data.fixes) and each of
    data.extra_train. Extra files must label every question they hold; no question may be in two files."""
    gold_file = str(input_path) if input_path else data.train
    gold_path = Path(input_path) if input_path else project_root() / data.train
    gold, fixed = read_training(gold_path, fixes_path(data), stage, skip_invalid)
    sources = [TrainingSource(gold_file, "--input" if input_path else "data.train", GOLD, gold.questions,
                      fixed.record() if fixed else None)]
    for i, file in enumerate(data.extra_train):
        key = f"data.extra_train[{i}]"
        path = project_root() / file
        if not path.is_file():
            raise UserError(f"{key}: {file} does not exist (looked for {path})")
        questions = read_reporting(path, stage, skip_invalid).questions
        unlabelled = [q.qid for q in questions if q.answer is None]
        if unlabelled:
            raise UserError(f"{key}: {file}: {len(unlabelled)} questions have no answer (first {unlabelled[0]}); "
                            "an extra training file labels every question")
        sources.append(TrainingSource(file, key, _kind(path), questions))
    seen: dict[str, TrainingSource] = {}
    for source in sources:
        for q in source.questions:
            other = seen.setdefault(q.qid, source)
            if other is not source:
                raise UserError(
                    f"{source.key}: {source.file}: question {q.qid} is also in {other.file} ({other.key}); "
                    "a question comes from one file only, so gold and pseudo-labels never mix: drop it from one"
                )
    return sources


def sources_path(dataset_name: str) -> Path:
    """Beside a built set: which files its samples came from (train copies it into the manifest)."""
    return datasets_dir() / f"{dataset_name}.sources.json"


def read_sources(dataset_name: str) -> dict[str, Any] | None:
    try:
        return json.loads(sources_path(dataset_name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def training_data(recipe: RoleRecipe) -> dict[str, Any]:
    """What a role's training run read, for its manifest: the built set's sources (as
    `dataset` recorded them) and each dataset.extra file."""
    return {"dataset": read_sources(recipe.dataset_name), "extra": mixed_counts(recipe)}
