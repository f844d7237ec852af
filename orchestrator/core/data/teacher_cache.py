"""The teacher cache: where `distill` keeps the teacher's replies and how a reply is keyed.

`distill` writes it; `dataset` reads the replies of the last distillation from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.core.common.ledger import Ledger, stable_key, text_hash
from orchestrator.core.common.paths import runs_dir
from orchestrator.core.data.competition import Question
from orchestrator.core.data.prompts import Example, answer_prompt
from orchestrator.core.recipes.schema import TeacherSection


def teacher_key(qid: str, prompt: str, model: str, sampling: dict[str, Any]) -> str:
    """The cache key of a teacher reply: what determines it and nothing else."""
    return stable_key(qid=qid, prompt=text_hash(prompt), model=model, sampling=sampling)


def sampling_of(teacher: TeacherSection) -> dict[str, Any]:
    return {"temperature": teacher.temperature, "max_tokens": teacher.max_tokens}


def teacher_prompt(q: Question, teacher: TeacherSection, examples: Sequence[Example] = ()) -> str:
    return answer_prompt(q, hint_gold=q.answer if teacher.hint_gold else None, examples=examples)


def cache_path() -> Path:
    return runs_dir() / "distill" / "teacher.jsonl"


def settings_path() -> Path:
    return runs_dir() / "distill" / "teacher_settings.json"


# What determines a cached reply besides the question: `dataset` reads the replies of the
# last `distill`, even when its settings came from --set or --teacher-model.
IDENTITY = ("model", "temperature", "max_tokens", "hint_gold")


def last_teacher(teacher: TeacherSection) -> TeacherSection:
    """`teacher` with the identity of the last distillation run, if there was one."""
    import json

    try:
        last = json.loads(settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return teacher
    return teacher.model_copy(update={k: last[k] for k in IDENTITY if k in last})


def cached_reply(
    cache: Ledger, q: Question, teacher: TeacherSection, examples: Sequence[Example] = ()
) -> dict[str, Any] | None:
    """The cached record of `q` under the current teacher settings (and few-shot examples), if any."""
    return cache.get(teacher_key(q.qid, teacher_prompt(q, teacher, examples), teacher.model, sampling_of(teacher)))
