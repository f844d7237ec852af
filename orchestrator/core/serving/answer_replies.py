"""Evaluate training data from the Answer model's own replies (`dataset.evaluate_source: answer_model`).

The Evaluate model reads the fine-tuned Answer model's reasoning at inference, not the
teacher's; trained on that model's own samples, right and wrong, each paired with the gold
letter, it learns to correct the mistakes it will meet. Each training question gets
`dataset.evaluate_samples` replies at `inference.vote_temperature`, from the served Answer
model (inference.answer_recipe) or a given endpoint, with that model's own prompt (its
few-shot examples included). Every reply is appended to
runs/<evaluate run>/answer_samples.jsonl the moment it arrives, keyed like infer's Answer
samples, so a re-run asks nothing twice. Preference pairs (orchestrator/stages/preference.py)
sample the SFT recipe's model the same way, at their own temperature, into their own run folder.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import StageFailed
from orchestrator.core.common.ledger import Ledger, stable_key, text_hash
from orchestrator.core.common.progress import bar
from orchestrator.core.data.answers import extract_choice
from orchestrator.core.data.competition import Question
from orchestrator.core.data.fewshot import examples_for
from orchestrator.core.data.prompts import answer_prompt
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import InferenceSection, PipelineRecipe, RoleRecipe
from orchestrator.core.serving.agents import Agent, agent_url, answer_agent, make_agent
from orchestrator.core.serving.endpoints import Endpoint, EndpointError


@dataclass
class AnswerReplies:
    replies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # qid -> sample records
    model: str = ""  # who answered: an endpoint's model, or the served run@version
    asked: int = 0  # requests that got a reply in this run
    cached: int = 0
    failures: list[str] = field(default_factory=list)
    prompts: dict[str, str] = field(default_factory=dict)  # qid -> the prompt each sample answered

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.replies.values())

    @property
    def wrong(self) -> int:
        return sum(r["letter"] != r["gold"] for v in self.replies.values() for r in v)

    @property
    def unparseable(self) -> int:
        return sum(r["letter"] is None for v in self.replies.values() for r in v)

    def line(self) -> str:
        share = self.wrong / self.total if self.total else 0.0
        return (f"Answer-model replies ({self.model}): {self.total}, wrong {self.wrong} ({share:.0%}; "
                f"{self.unparseable} without a letter); {self.asked} asked now, {self.cached} cached")


def sample_key(q: Question, prompt: str, identity: str, i: int, temperature: float, max_tokens: int) -> str:
    return stable_key(qid=q.qid, prompt=text_hash(prompt), model=identity, sample=i,
                      temperature=temperature, max_tokens=max_tokens)


def answer_model_replies(
    questions: list[Question], *, pipe: PipelineRecipe, samples: int, ledger_path: Path,
    answer_url: str | None = None, answer_model: str | None = None,
    answer_recipe: Loaded[RoleRecipe] | None = None, temperature: float | None = None,
    max_tokens: int | None = None, stage: str = "dataset evaluate",
) -> AnswerReplies:
    """`samples` Answer-model replies to each question (cached in `ledger_path`); raises
    StageFailed after the run when a request failed, the replies received kept for the next.
    Each is asked the Answer model's own prompt: the one its training set has for the question,
    worked examples included (fewshot.k > 0), as infer asks it. The model is the pipeline's
    (first) Answer model, or `answer_recipe`'s; an endpoint given by `answer_url` answers instead.
    Sampled at `temperature` (default inference.vote_temperature) and `max_tokens`
    (default inference.max_tokens)."""
    inference = pipe.inference
    if answer_recipe is None:
        answerer, role = answer_agent(inference, answer_url, answer_model)
    else:
        role = answer_recipe
        answerer = make_agent("answer", url=answer_url, model=answer_model, api_key_env=inference.api_key_env,
                              loaded=None if answer_url else answer_recipe)
    temperature = inference.vote_temperature if temperature is None else temperature
    max_tokens = max_tokens or inference.max_tokens
    shots = examples_for(questions, pipe, role.recipe, trained=True)
    prompts = {q.qid: answer_prompt(q, examples=shots.get(q)) for q in questions}
    keys = {(q.qid, i): sample_key(q, prompts[q.qid], answerer.cache_identity, i, temperature, max_tokens)
            for q in questions for i in range(samples)}
    out = AnswerReplies(model=answerer.model if answerer.url else answerer.identity, prompts=prompts)
    with Ledger(ledger_path) as cache:
        todo = [(q, i) for q in questions for i in range(samples) if keys[q.qid, i] not in cache]
        out.cached = len(keys) - len(todo)
        if todo:
            with agent_url(answerer) as url:
                asyncio.run(_ask_all(todo, url, answerer, inference, (temperature, max_tokens), prompts, keys,
                                     cache, out, stage))
        for q in questions:
            got = [cache.get(keys[q.qid, i]) for i in range(samples)]
            out.replies[q.qid] = [{**r, "gold": q.answer} for r in got if r is not None]  # today's gold
    if out.failures:
        raise StageFailed(
            f"{len(out.failures)} Answer-model requests failed ({out.failures[0]}"
            f"{', ...' if len(out.failures) > 1 else ''}); the {out.total} replies received are cached in "
            f"{ledger_path}: run the same command again to ask only for the rest",
        )
    return out


async def _ask_all(todo, url: str, answerer: Agent, inference: InferenceSection, sampling: tuple[float, int],
                   prompts, keys, cache: Ledger, out: AnswerReplies, stage: str) -> None:
    temperature, max_tokens = sampling
    progress = bar(len(todo), stage, "reply")
    async with Endpoint(url, answerer.model, answerer.api_key, concurrency=inference.concurrency,
                        timeout=inference.timeout, max_retries=inference.max_retries) as endpoint:
        async def one(q: Question, i: int) -> None:
            try:
                reply = await endpoint.complete(prompts[q.qid], temperature=temperature, max_tokens=max_tokens)
            except EndpointError as e:
                out.failures.append(f"{q.qid} sample {i}: {e.reason}")
            else:
                cache.append({"key": keys[q.qid, i], "id": q.qid, "sample": i, "model": answerer.identity,
                              "text": reply.text, "letter": extract_choice(reply.text, len(q.options)),
                              "gold": q.answer, "latency": round(reply.latency, 3)})
                out.asked += 1
            progress.update(1)

        try:
            await asyncio.gather(*(one(q, i) for q, i in todo))
        finally:
            progress.close()
