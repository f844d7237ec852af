"""The pure rules of a question's answer: the Answer samples' temperatures, when extra votes
are asked, how the samples and their failures are gathered, and the trace record (final
answer, its source, every problem) with the fallback letter where no agent gave one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from orchestrator.core.data.answers import extract_choice
from orchestrator.core.data.competition import Question
from orchestrator.core.recipes.schema import InferenceSection
from orchestrator.core.run_folders.trace import (
    AnswerStep,
    ErrorRecord,
    Evaluation,
    LetterSource,
    Sample,
    TraceRecord,
    chosen_reply,
)
from orchestrator.core.serving.endpoints import Reply


def temperatures(inference: InferenceSection) -> list[float]:
    """One temperature per Answer sample: `temperature` for a single one, else `vote_temperature`."""
    if inference.votes == 1:
        return [inference.temperature]
    return [inference.vote_temperature] * inference.votes


def wants_extra(letters: Sequence[str | None], rule: str) -> bool:
    """Whether a question's first samples leave it open: `split`, they are not unanimous (a
    sample without a letter differs from every letter); `no_majority`, no letter has more than
    half of them."""
    if not letters:
        return False
    if rule == "split":
        return len(set(letters)) > 1 or letters[0] is None
    top = Counter(x for x in letters if x).most_common(1)
    return not top or top[0][1] * 2 <= len(letters)


def gathered(parts: Sequence[Sequence[tuple[Sample, ErrorRecord | None]]]) -> tuple[list[Sample], list[ErrorRecord]]:
    """The Answer models' samples in the order the models are listed, and their API failures,
    each numbered by its sample's position among all (when there are several)."""
    pairs = [pair for part in parts for pair in part]
    several = len(pairs) > 1
    return [s for s, _ in pairs], [p.model_copy(update={"sample": n if several else None})
                                   for n, (_, p) in enumerate(pairs) if p]


def trace_record(
    q: Question, key: str, models: list[str], samples: list[Sample], api_errors: list[ErrorRecord],
    evaluation: Evaluation | None, extra_rounds: int = 0, few_shot: dict[str, list[str]] | None = None,
) -> TraceRecord:
    """The trace line of a question: final answer, its source, and every problem found.
    `samples` are the Answer models' samples (the first round's in the order the models are
    listed, then the extra round's); `models` their labels."""
    answer = AnswerStep.of(models, samples).model_copy(update={"extra_rounds": extra_rounds,
                                                                "few_shot": few_shot or {}})
    vote, read = answer.letter, chosen_reply(samples)  # read is not None when there is a vote
    eval_letter = evaluation.letter if evaluation else None
    source: LetterSource
    if eval_letter:
        final, source = eval_letter, "evaluate"
    elif vote:
        final, source = vote, "answer_fallback" if len(samples) == 1 else "vote_fallback"
    else:
        final, source = None, "none"

    several, ensemble = len(samples) > 1, len(models) > 1
    problems = list(api_errors)
    for i, s in enumerate(samples):
        if s.answered and s.letter is None:
            problems.append(ErrorRecord(id=q.qid, stage="answer", kind="unparseable", text=s.text,
                                    sample=i if several else None, model=s.model if ensemble else None))
    if evaluation and evaluation.text is not None and eval_letter is None:
        problems.append(ErrorRecord(id=q.qid, stage="evaluate", kind="unparseable", text=evaluation.text))
    if evaluation and eval_letter and read and vote and eval_letter != vote:
        problems.append(ErrorRecord(id=q.qid, stage="evaluate", kind="disagreement", answer_letter=vote,
                                evaluate_letter=eval_letter, answer_text=read.text, evaluate_text=evaluation.text))
    if final is None:
        problems.append(ErrorRecord(id=q.qid, stage="final", kind="no_answer"))
    return TraceRecord(key=key, id=q.qid, status="failed" if api_errors else "done", final=final, source=source,
                       answer=answer, evaluate=evaluation, errors=problems)


def with_fallback(record: TraceRecord, fallback: str | None, letters: str) -> TraceRecord:
    """The trace record with the fallback letter as its final answer when no agent gave one
    (`source: fallback`); a letter the question does not offer becomes A. None: no answer."""
    if record.final is not None and record.source != "fallback":
        return record
    if fallback is None:
        return record.model_copy(update={"final": None, "source": "none"})
    return record.model_copy(update={"final": fallback if fallback in letters else "A", "source": "fallback"})


def reply_fields(reply: Reply, q: Question) -> dict[str, Any]:
    """What a sample or an evaluation records of a reply: its text, the letter read from it, timings."""
    return {"text": reply.text, "letter": extract_choice(reply.text, len(q.options)),
            "latency": round(reply.latency, 3), "attempts": reply.attempts, "finish_reason": reply.finish_reason}
