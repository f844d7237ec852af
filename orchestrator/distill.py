"""Stage: distil worked solutions from a teacher LLM over the OpenAI API."""

from __future__ import annotations

from typing import Any

from orchestrator.ledger import stable_key, text_hash


def teacher_key(qid: str, prompt: str, model: str, sampling: dict[str, Any]) -> str:
    """The cache key of a teacher reply: what determines it and nothing else."""
    return stable_key(qid=qid, prompt=text_hash(prompt), model=model, sampling=sampling)
