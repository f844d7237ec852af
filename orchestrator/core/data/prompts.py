"""The prompts, one renderer for distillation, the training sets and inference, so what a
model was trained on and what it is asked can never drift apart; and the worked example an
Answer prompt may show (found by fewshot.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.core.common.render import render
from orchestrator.core.data.competition import LETTERS, Question


@dataclass(frozen=True)
class Example:
    """A worked example: a training question and the teacher reply that reached its gold letter."""

    qid: str
    problem: str
    question: str
    options: tuple[str, ...]
    solution: str

    @property
    def problem_id(self) -> str:
        return self.qid.rpartition("#")[0]


def format_options(options: tuple[str, ...] | list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def answer_prompt(q: Question, hint_gold: str | None = None, examples: Sequence[Example] = ()) -> str:
    """The Answer prompt; `examples`: worked examples put before the problem (fewshot.k);
    `hint_gold` appends the correct letter (distillation only)."""
    shown = [{"problem": e.problem, "question": e.question, "options": format_options(e.options),
              "solution": e.solution} for e in examples]
    text = render(
        "prompts/answer.j2", problem=q.problem, question=q.question, options=format_options(q.options),
        examples=shown,
    )
    if hint_gold:
        text += render("prompts/hint.j2", gold=hint_gold)
    return text


def evaluate_prompt(q: Question, think: str) -> str:
    """The Evaluate prompt with the Answer text as `think`."""
    return render(
        "prompts/evaluate.j2",
        problem=q.problem,
        question=q.question,
        options=format_options(q.options),
        think=think.strip(),
    )


def evaluate_target(letter: str) -> str:
    return f"答案是：{letter}"

