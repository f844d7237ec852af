"""The trace: one typed record per question, written by `infer` (trace.jsonl) and read back by
score, compare, pseudo-label and eval through the same types.

A record is always written with every key (`TraceRecord.line()`); reading fills what an older
line lacks: a sample's `index` (its number among its model's samples), a sample's `model`
(the record's one Answer model), `models`, `votes` and `by_model` (from the samples). So the
lines every version wrote still read.

To add a field: give it a default (`extra_rounds: int = 0`, `few_shot: list[str] = []`,
`deadline: str | None = None`) on the model it belongs to. Older lines read with the default,
new lines carry it, and nothing else changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, model_validator

from orchestrator.core.common.ledger import read_records

LetterSource = Literal["evaluate", "answer_fallback", "vote_fallback", "fallback", "none"]  # whose letter is final
Status = Literal["done", "failed"]


class TracedReply(BaseModel):
    """A model's reply as traced, or the `error` (the failure's reason) that left none."""

    text: str | None = None
    letter: str | None = None
    latency: float | None = None
    attempts: int | None = None
    finish_reason: str | None = None
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.text is not None


class Sample(TracedReply):
    """One Answer sample: the `index`-th sample of `model`."""

    model: str = "answer"
    index: int = 0
    round: int = 0  # 1: an extra vote (inference.extra_votes), asked because the first round was split


class Evaluation(TracedReply):
    """The Evaluate step: the reply read for the final letter."""

    model: str = "evaluate"


class ErrorRecord(BaseModel):
    """A problem the Error Agent lists: an API failure, unparseable output, a disagreement, no
    answer. Written with only the keys that apply (errors.jsonl reads as it always did)."""

    id: str = ""
    stage: str
    kind: str
    reason: str | None = None
    attempts: int | None = None
    detail: str | None = None
    sample: int | None = None  # the position among the record's samples (several samples only)
    model: str | None = None  # the Answer model (several models only)
    text: str | None = None
    answer_letter: str | None = None
    evaluate_letter: str | None = None
    answer_text: str | None = None
    evaluate_text: str | None = None

    def line(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def majority(letters: Sequence[str | None]) -> str | None:
    """The most frequent letter; a tie goes to the earliest sample among the tied (the first
    sample's letter when it is one of them)."""
    counts = Counter(letter for letter in letters if letter)
    if not counts:
        return None
    top = max(counts.values())
    return next(letter for letter in letters if letter and counts[letter] == top)


def chosen_sample(samples: Sequence[Sample]) -> int | None:
    """The index of the Answer text the Evaluate Agent reads: the first agreeing with the
    majority, else the first with text; None: no sample has text."""
    vote = majority([s.letter for s in samples])
    answered = [i for i, s in enumerate(samples) if s.answered]
    return next((i for i in answered if samples[i].letter == vote), answered[0] if answered else None)


def chosen_reply(samples: Sequence[Sample]) -> Sample | None:
    """The Answer sample the Evaluate Agent reads (see `chosen_sample`)."""
    chosen = chosen_sample(samples)
    return None if chosen is None else samples[chosen]


class AnswerStep(BaseModel):
    """Every Answer sample in the order the models are listed, and what they add up to."""

    model: str = "answer"  # the models' labels joined by "+"
    models: list[str] = []
    samples: list[Sample] = []
    votes: dict[str, int] = {}
    letter: str | None = None  # the vote over every sample
    chosen: int | None = None  # the sample the Evaluate Agent read
    by_model: dict[str, str | None] = {}  # each model's own letter: the majority of its samples
    extra_rounds: int = 0  # 1: the first samples were split (inference.extra_when), extra votes were asked
    few_shot: dict[str, list[str]] = {}  # model label -> the worked examples' question ids in its prompt

    @classmethod
    def of(cls, models: list[str], samples: list[Sample]) -> AnswerStep:
        letters = [s.letter for s in samples]
        return cls(model="+".join(models), models=list(models), samples=samples,
                   votes=dict(Counter(x for x in letters if x)), letter=majority(letters),
                   chosen=chosen_sample(samples),
                   by_model={m: majority([s.letter for s in samples if s.model == m]) for m in models})

    @model_validator(mode="before")
    @classmethod
    def _older_lines(cls, data: Any) -> Any:
        """What a line of an earlier version lacks, from what it holds."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        models = data.get("models") or [data.get("model") or "answer"]
        data.setdefault("models", models)
        data.setdefault("model", "+".join(models))
        samples, seen = [], Counter[str]()
        for raw in data.get("samples") or []:
            s = dict(raw) if isinstance(raw, dict) else raw
            if isinstance(s, dict):
                s.setdefault("model", models[0])
                s.setdefault("index", seen[s["model"]])
                seen[s["model"]] += 1
            samples.append(s)
        data["samples"] = samples
        letters = [s.get("letter") if isinstance(s, dict) else None for s in samples]
        data.setdefault("votes", dict(Counter(x for x in letters if x)))
        if "by_model" not in data:
            data["by_model"] = {m: majority([s.get("letter") for s in samples if isinstance(s, dict)
                                             and s.get("model") == m]) for m in models}
        return data

    def letters_by_model(self) -> dict[str, list[str | None]]:
        """model label -> the letters of its samples, in the order the models are listed."""
        out: dict[str, list[str | None]] = {m: [] for m in self.models}
        for s in self.samples:
            out.setdefault(s.model, []).append(s.letter)
        return out


class TraceRecord(BaseModel):
    """The trace line of a question."""

    key: str = ""  # what determined it (prompts, models, sampling): a changed setting is new work
    id: str
    status: Status = "done"  # failed: a request failed after retries; asked again next run
    final: str | None = None
    source: LetterSource = "none"
    answer: AnswerStep = AnswerStep()
    evaluate: Evaluation | None = None
    errors: list[ErrorRecord] = []

    def line(self) -> dict[str, Any]:
        """The JSON line: every key, the problems with only theirs."""
        return {**self.model_dump(exclude={"errors"}), "errors": [e.line() for e in self.errors]}

    def evaluate_effect(self, truth: str, final: str | None) -> tuple[bool, bool]:
        """(fixed, broke) against the gold letter: the Evaluate Agent's own final letter right where
        the Answer Agent's was wrong, or wrong where it was right; a fallback letter is neither."""
        if self.source != "evaluate":
            return False, False
        answer_right, final_right = self.answer.letter == truth, final == truth
        return final_right and not answer_right, answer_right and not final_right


def read_trace(path: Path) -> dict[str, TraceRecord]:
    """question id -> its last trace record in `path` (a line that is not a record is skipped)."""
    from pydantic import ValidationError

    records: dict[str, TraceRecord] = {}
    for raw in read_records(path):
        try:
            record = TraceRecord.model_validate(raw)
        except ValidationError:
            continue
        records[record.id] = record
    return records
