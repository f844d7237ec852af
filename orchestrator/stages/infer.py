"""Stage: answer every question with two agents, resumably.

The Answer Agent (Answer model) writes reasoning and a likely answer, `votes` times; the
Evaluate Agent (Evaluate model) reads the Answer text that agrees with the majority and gives
the final letter; the Error Agent lists every problem. In the output directory:

  stage1.jsonl      every Answer sample the moment it arrives (a crash in stage 2 redoes none)
  trace.jsonl       one line per question: both stages' texts, letters, votes, final answer,
                    its source, timings, and the problems found
  errors.jsonl      one record per problem: API failure, unparseable output, disagreement, no answer
  submission.jsonl  the input in competition format with every question's answer filled
  run.json          what answered: the recipes and overrides, the input, the inference settings,
                    each agent's model and, for a served model, its manifest's recipe and split

Records are keyed by what determines them (prompts, models, sampling), so re-running the same
command sends no request for finished questions and changed settings are never taken for done
work. A question with a request that failed after retries is traced as `failed` and asked again
by the next run; its submission answer falls back to the Answer letter meanwhile.

With `inference.deadline_s`, the run always leaves a submission in time: from DEADLINE_MARGIN_S
before the deadline no request is sent (when its turn comes) and none still awaited is waited
for, no server is started (nor waited for past it), and submission.jsonl is written at once from
what has arrived (the Evaluate letter, else the Answer majority, else the fallback), while
servers may still be stopping. A served model whose server went away (its port refuses) is
asked nothing more either. Such questions are traced `not_asked` and asked by the next run.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import (
    AsyncExitStack,
    ExitStack,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from orchestrator.core.common.errors import StageFailed, UserError
from orchestrator.core.common.files import atomic_write_json, atomic_write_jsonl
from orchestrator.core.common.ledger import Ledger, read_records, stable_key, text_hash
from orchestrator.core.common.process import free_port
from orchestrator.core.common.progress import bar, say
from orchestrator.core.data.answers import extract_choice
from orchestrator.core.data.competition import Dataset, Question, read_reporting, write_submission
from orchestrator.core.data.fallback import fallback_letter
from orchestrator.core.data.fewshot import Fewshot, examples_for
from orchestrator.core.data.prompts import answer_prompt, evaluate_prompt
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import AnswerModel, InferenceSection, PipelineRecipe, RoleRecipe
from orchestrator.core.run_folders.locks import run_lock
from orchestrator.core.run_folders.role_paths import role_paths
from orchestrator.core.run_folders.trace import (
    AnswerStep,
    ErrorRecord,
    Evaluation,
    LetterSource,
    Sample,
    TraceRecord,
    chosen_reply,
)
from orchestrator.core.run_folders.trained import read_manifest
from orchestrator.core.serving.agents import Agent, agent_url, make_agent
from orchestrator.core.serving.endpoints import Endpoint, EndpointError, Reply
from orchestrator.core.serving.servers import (
    adapter_version,
    check_adapters,
    lora_group_key,
    one_server,
    served_adapters,
)

@dataclass
class Unit:
    """Answer agents reached through one server: an endpoint, a served model, or one
    vLLM server holding several adapters of one base."""

    agents: list[Agent]

    @contextmanager
    def url(self, startup_timeout: float | None = None) -> Iterator[str]:
        first = self.agents[0]
        if not first.lora:
            with agent_url(first, startup_timeout) as url:
                yield url
            return

        with served_adapters([a.loaded for a in self.agents if a.loaded], free_port(),
                             startup_timeout=startup_timeout) as serving:
            yield serving.url


@dataclass
class InferSummary:
    out_dir: Path
    questions: int = 0
    answered: int = 0
    resumed: int = 0  # finished by an earlier run
    stale: int = 0  # answered by an earlier run with other models or settings: asked again
    failed: int = 0  # a request failed after retries: asked again next run
    not_asked: int = 0  # cut by the deadline or a server that went away: asked again next run
    sources: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # "kind (stage)" -> count
    requests: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    # per Answer round (the first `votes`, then extra_votes): questions and Answer requests of this run
    rounds: list[tuple[int, int]] = field(default_factory=list)
    extra: str = ""  # how the extra round was chosen, e.g. "+2 votes where split"

    @property
    def questions_per_second(self) -> float:
        return (self.questions - self.resumed) / self.seconds if self.seconds else 0.0

    def table(self) -> str:
        rows = [
            ("questions", self.questions),
            ("answered", self.answered),
            ("  by the Evaluate Agent", self.sources["evaluate"]),
            ("  Answer letter fallback", self.sources["answer_fallback"]),
            ("  vote majority fallback", self.sources["vote_fallback"]),
            ("  fallback letter (no answer read)", self.sources["fallback"]),
            ("without an answer (null)", self.sources["none"]),
            ("finished by an earlier run", self.resumed),
            ("asked again (a model or setting changed)", self.stale),
            ("failed requests (asked again next run)", self.failed),
            ("not asked: deadline or server gone (asked again next run)", self.not_asked),
            ("errors", ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"),
            *[(f"answer round {n + 1}{f' ({self.extra})' if n else ''}", f"{q} questions, {r} requests")
              for n, (q, r) in enumerate(self.rounds) if self.extra],
            ("requests sent", self.requests),
            ("questions per second", f"{self.questions_per_second:.2f}"),
            ("submission", self.out_dir / "submission.jsonl"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


DEADLINE_MARGIN_S = 2.0  # at most this long before inference.deadline_s, the submission is written
T = TypeVar("T")


def deadline_margin(deadline_s: float) -> float:
    """How long before the deadline asking stops and the submission is written."""
    return min(DEADLINE_MARGIN_S, 0.1 * deadline_s)


class _NotAsked(Exception):
    """A request not sent, or no longer waited for: the deadline came, or the server went away."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------- pure rules


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


def _reply_fields(reply: Reply, q: Question) -> dict[str, Any]:
    return {"text": reply.text, "letter": extract_choice(reply.text, len(q.options)),
            "latency": round(reply.latency, 3), "attempts": reply.attempts, "finish_reason": reply.finish_reason}


# ---------------------------------------------------------------- endpoints


def make_answer_agents(
    listed: list[AnswerModel], recipes: list[Loaded[RoleRecipe] | None], api_key_env: str | None
) -> list[Agent]:
    """The Answer models in the order listed (`recipes[i]`: the loaded recipe of `listed[i]`,
    None for an endpoint), each with a label unique among them; adapters of one base that vLLM
    serves are marked to share one server."""
    from urllib.parse import urlsplit


    agents = [make_agent("answer", url=m.url, model=m.model, api_key_env=api_key_env, loaded=loaded)
              for m, loaded in zip(listed, recipes, strict=True)]
    labels = Counter(a.label for a in agents)
    for a in agents:
        if labels[a.label] > 1 and a.url:  # the same model name at two endpoints
            a.label = f"{a.model}@{urlsplit(a.url).netloc}"
    seen: dict[str, Agent] = {}
    for a in agents:
        if a.label in seen:
            raise UserError(f"inference.answer_models: {a.describe()} is listed twice; "
                            "list each model once (inference.votes asks each for several samples)")
        seen[a.label] = a

    groups: dict[tuple[str, str], list[Agent]] = {}
    for a in agents:
        key = lora_group_key(a.loaded.recipe) if a.loaded else None
        if key:
            groups.setdefault(key, []).append(a)
    for group in groups.values():
        if len(group) > 1:
            check_adapters([a.loaded for a in group if a.loaded])
            for a in group:
                assert a.loaded is not None
                a.lora = True
                a.model = a.loaded.recipe.run_name  # the adapter's name in the vLLM server
                a.identity = f"{a.loaded.recipe.run_name}@lora-{adapter_version(a.loaded.recipe)}"
    return agents


def share_one_server(answers: list[Agent], evaluate: Agent) -> bool:
    """When every model is served as an adapter of one base with vLLM (see serving.one_server),
    mark them all to be served by one vLLM server: the whole run is pipelined on it."""
    agents = [*answers, evaluate]
    loadeds = [a.loaded for a in agents if a.loaded and not a.url]
    if len(loadeds) < len(agents) or not one_server([x.recipe for x in loadeds]):
        return False
    check_adapters(loadeds)
    for a in agents:
        assert a.loaded is not None
        a.lora = True
        a.model = a.loaded.recipe.run_name  # the adapter's name in the vLLM server
    return True


def serving_units(agents: list[Agent]) -> list[Unit]:
    """One unit per server to start or endpoint to reach, in the order the models are listed;
    the adapters sharing a vLLM server form one unit, where the first of them is listed."""
    units: list[Unit] = []
    shared: dict[tuple[str, str] | None, Unit] = {}
    for a in agents:
        if a.lora and a.loaded:
            key = lora_group_key(a.loaded.recipe)
            if key in shared:
                shared[key].agents.append(a)
                continue
            shared[key] = Unit([a])
            units.append(shared[key])
        else:
            units.append(Unit([a]))
    return units



# ---------------------------------------------------------------- the run


class _Run:
    def __init__(self, out_dir: Path, questions: list[Question], inference: InferenceSection, answers: list[Agent],
                 evaluate: Agent, fewshot: dict[str, Fewshot] | None = None):
        self.out_dir, self.inf = out_dir, inference
        self.answers, self.evaluate = answers, evaluate
        self.one_server = all(a.lora for a in [*answers, evaluate])  # see share_one_server
        self.labels = [a.label for a in answers]
        # the first `votes` samples of each model, then the extra round's
        self.temps = temperatures(inference) + [inference.extra_temperature] * inference.extra_votes
        self.rounds = [range(inference.votes), range(inference.votes, len(self.temps))]
        self.fewshot = fewshot or {}
        self.prompts = {a.label: {q.qid: answer_prompt(q, examples=self._shots(a.label, q)) for q in questions}
                        for a in answers}
        self.keys = {q.qid: self._trace_key(q) for q in questions}
        self.requests = 0
        self.round_requests = [0, 0]  # Answer requests sent per round
        self.round_questions = [0, 0]  # questions asked (or read from stage1.jsonl) per round
        self.honours_n: dict[str, bool] = {}  # Answer model label -> whether its endpoint took `n`
        self.failures: list[str] = []
        self._bars: dict[str, Any] = {}
        self.deadline: float | None = None  # time.monotonic() when asking stops (margin included)
        self.down: dict[str, str] = {}  # agent label -> why its server cannot be asked
        self._gates: dict[Endpoint, asyncio.Semaphore] = {}  # requests let through to each endpoint

    def left(self) -> float | None:
        """Seconds until asking stops (None: no deadline)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def expired(self) -> bool:
        left = self.left()
        return left is not None and left <= 0

    async def _ask(self, agent: Agent, endpoint: Endpoint | None, call: Callable[[Endpoint], Awaitable[T]]) -> T:
        """`call(endpoint)`, unless the deadline has come or the agent's server went away, as seen
        when the request's turn comes (`inference.concurrency` in flight); a reply still awaited
        at the deadline is given up. A served model's refused connection (after retries) means
        its server is gone: it is asked nothing more."""

        def refuse() -> None:
            if agent.label in self.down:
                raise _NotAsked(self.down[agent.label])
            if self.expired():
                raise _NotAsked("deadline")

        refuse()
        assert endpoint is not None, "an endpoint is up for every model with a question to ask"
        gate = self._gates.setdefault(endpoint, asyncio.Semaphore(self.inf.concurrency))

        async def send() -> T:
            async with gate:
                refuse()
                try:
                    return await call(endpoint)
                except EndpointError as e:
                    if e.reason == "connection refused" and not agent.url:
                        self.down[agent.label] = "server gone"
                    raise

        left = self.left()
        if left is None:
            return await send()
        try:
            return await asyncio.wait_for(send(), left)
        except asyncio.TimeoutError:
            raise _NotAsked("deadline") from None

    def _not_asked(self, q: Question, stage: str, why: _NotAsked, model: str | None = None) -> ErrorRecord:
        return ErrorRecord(id=q.qid, stage=stage, kind="not_asked", reason=why.reason,
                       model=model if len(self.answers) > 1 else None)

    @contextmanager
    def _serving(self, server: Any, agents: list[Agent]) -> Iterator[str | None]:
        """The URL of `server` (a context manager that starts it), or None: the deadline came, or
        (with a deadline) it did not start; then its agents are asked nothing."""
        if self.expired():
            yield None
            return
        with ExitStack() as stack:
            try:
                url = stack.enter_context(server)
            except StageFailed as e:
                if self.deadline is None:
                    raise
                say("infer", f"{e.lines[0]}; its questions get the fallback")
                self.down.update((a.label, "server did not start") for a in agents)
                url = None
            yield url

    def snapshot(self, q: Question) -> TraceRecord:
        """The question's record as it stands: traced, else built from the first round's Answer
        samples that have arrived (the others not asked), without the Evaluate step."""
        traced = self.trace.get(self.keys[q.qid])
        if traced is not None:
            return TraceRecord.model_validate(traced)
        parts = []
        for a in self.answers:
            part = []
            for i in self.rounds[0]:
                cached = self.samples.get(self.sample_key(q, a, i))
                part.append((Sample.model_validate({**cached, "model": a.label, "index": i}), None) if cached else
                            (Sample(model=a.label, index=i, error="deadline"),
                             self._not_asked(q, "answer", _NotAsked("deadline"), a.label)))
            parts.append(part)
        samples, problems = gathered(parts)
        return trace_record(q, self.keys[q.qid], self.labels, samples, problems, None)

    def sampling_lines(self) -> list[str]:
        """How each Answer endpoint took several samples, as found out by asking."""
        return [f"{label}: {'several samples in one request (n)' if took else 'one request per sample (the endpoint ignores n)'}"
                for label, took in self.honours_n.items()]

    def _shots(self, label: str, q: Question) -> tuple:
        shots = self.fewshot.get(label)
        return shots.get(q) if shots else ()

    def _trace_key(self, q: Question) -> str:
        # one Answer model (or one prompt), no extra votes: the key it always had, so its
        # finished questions stay finished
        identities = [a.identity for a in self.answers]
        prompts = list(dict.fromkeys(text_hash(self.prompts[a.label][q.qid]) for a in self.answers))
        sampling: dict[str, Any] = {"answer": self.temps[: self.inf.votes], "evaluate": self.inf.temperature,
                                    "max_tokens": self.inf.max_tokens}
        if self.inf.extra_votes:
            sampling["extra"] = {"votes": self.inf.extra_votes, "when": self.inf.extra_when,
                                 "temperature": self.inf.extra_temperature}
        return stable_key(
            qid=q.qid, answer_prompt=prompts[0] if len(prompts) == 1 else prompts,
            evaluate_prompt=text_hash(evaluate_prompt(q, "")),
            answer_model=identities[0] if len(identities) == 1 else identities,
            evaluate_model=self.evaluate.identity,
            sampling=sampling,
        )

    def sample_key(self, q: Question, agent: Agent, i: int) -> str:
        """A sample's key names only its own model, so adding a model reuses the others' samples."""
        return stable_key(qid=q.qid, prompt=text_hash(self.prompts[agent.label][q.qid]), model=agent.identity,
                          sample=i, temperature=self.temps[i], max_tokens=self.inf.max_tokens)

    @contextmanager
    def ledgers(self) -> Iterator[None]:
        out = self.out_dir
        with Ledger(out / "stage1.jsonl") as self.samples, Ledger(out / "trace.jsonl") as self.trace, \
                Ledger(out / "errors.jsonl", key_field="id") as self.live_errors:
            yield

    def is_done(self, q: Question) -> bool:
        record = self.trace.get(self.keys[q.qid])
        return record is not None and record.get("status") == "done"

    def traced(self, q: Question) -> TraceRecord:
        return TraceRecord.model_validate(self.trace.records[self.keys[q.qid]])

    def needs_answer(self, q: Question, agent: Agent, indices: Sequence[int]) -> bool:
        return any(self.sample_key(q, agent, i) not in self.samples for i in indices)

    def cached_letters(self, q: Question, indices: Sequence[int]) -> list[str | None] | None:
        """Every model's letters of those samples from stage1.jsonl; None: one is not there."""
        records = [self.samples.get(self.sample_key(q, a, i)) for a in self.answers for i in indices]
        return None if any(r is None for r in records) else [r["letter"] for r in records if r is not None]

    def extra_questions(self, questions: Sequence[Question], first: dict[str, list[Sample]]) -> list[Question]:
        """The questions whose first-round samples (all models pooled) call for extra votes."""
        if not self.inf.extra_votes:
            return []
        return [q for q in questions if wants_extra([s.letter for s in first[q.qid]], self.inf.extra_when)]

    def _api_error(self, q: Question, stage: str, e: EndpointError, model: str | None = None) -> ErrorRecord:
        """The failure as a problem (its sample's position is set by `gathered`)."""
        model = model if len(self.answers) > 1 else None
        error = ErrorRecord(id=q.qid, stage=stage, kind="api", reason=e.reason, attempts=e.attempts, detail=e.detail,
                        model=model)
        self.live_errors.append(error.line())  # visible at once; errors.jsonl is rewritten at the end
        self.failures.append(f"{q.qid} ({stage}{f' {model}' if model else ''}): {e.reason}")
        return error

    @asynccontextmanager
    async def _endpoint(self, agent: Agent, url: str | None) -> AsyncIterator[Endpoint | None]:
        if url is None:
            yield None
            return
        inf = self.inf
        async with Endpoint(url, agent.model, agent.api_key, concurrency=inf.concurrency,
                            timeout=inf.timeout, max_retries=inf.max_retries) as endpoint:
            try:
                yield endpoint
            finally:
                self.requests += endpoint.requests
                if endpoint.honours_n is not None and agent.role == "answer":
                    self.honours_n[agent.label] = endpoint.honours_n

    @asynccontextmanager
    async def _endpoints(self, agents: list[Agent], urls: dict[str, str | None]) -> AsyncIterator[list[Endpoint | None]]:
        """An endpoint for each agent (None where its unit is not up: all its samples cached)."""
        async with AsyncExitStack() as stack:
            yield [await stack.enter_async_context(self._endpoint(a, urls.get(a.label))) for a in agents]

    def _tick(self, stage: str) -> None:
        if stage in self._bars:
            self._bars[stage].update(1)

    @contextmanager
    def _progress(self, *stages: str, total: int, names: dict[str, str] | None = None) -> Iterator[None]:
        self._bars = {stage: bar(total, (names or {}).get(stage, stage), "q") for stage in stages}
        try:
            yield
        finally:
            for b in self._bars.values():
                b.close()
            self._bars = {}

    async def stage1(self, q: Question, agent: Agent, endpoint: Endpoint | None, indices: Sequence[int],
                     round_: int = 0) -> list[tuple[Sample, ErrorRecord | None]]:
        """One Answer model's samples `indices` of `q` (from stage1.jsonl when there), each with its
        API failure. The samples to ask at one temperature go in one request (`n`) where the
        endpoint takes it."""
        prompt = self.prompts[agent.label][q.qid]
        done: dict[int, tuple[Sample, ErrorRecord | None]] = {}
        todo: dict[float, list[int]] = {}
        for i in indices:
            cached = self.samples.get(self.sample_key(q, agent, i))
            if cached is not None:
                done[i] = Sample.model_validate({**cached, "model": agent.label, "index": i, "round": round_}), None
            else:
                todo.setdefault(self.temps[i], []).append(i)

        async def ask(temperature: float, numbers: list[int]) -> None:
            try:
                replies, requests = await self._ask(agent, endpoint, lambda e: e.complete_n(
                    prompt, len(numbers), temperature=temperature, max_tokens=self.inf.max_tokens))
            except _NotAsked as why:
                for i in numbers:
                    done[i] = (Sample(model=agent.label, index=i, round=round_, error=why.reason),
                               self._not_asked(q, "answer", why, agent.label))
                return
            except EndpointError as e:
                self.round_requests[round_] += 1
                problem = self._api_error(q, "answer", e, agent.label)
                for i in numbers:
                    done[i] = Sample(model=agent.label, index=i, round=round_, attempts=e.attempts,
                                     error=e.reason), problem
                return
            self.round_requests[round_] += requests
            for i, reply in zip(numbers, replies, strict=True):
                fields = _reply_fields(reply, q)
                self.samples.append({"key": self.sample_key(q, agent, i), "id": q.qid, "model": agent.label,
                                     "sample": i, **fields})
                done[i] = Sample(model=agent.label, index=i, round=round_, **fields), None

        await asyncio.gather(*(ask(t, numbers) for t, numbers in todo.items()))
        return [done[i] for i in indices]

    async def stage1_all(self, q: Question, endpoints: list[Endpoint | None]) -> tuple[list[Sample], list[ErrorRecord]]:
        """Every Answer model's samples of `q`: the first round in the order the models are
        listed, then the extra round's where the first round calls for it."""
        parts = list(await asyncio.gather(*(self.stage1(q, a, e, self.rounds[0])
                                            for a, e in zip(self.answers, endpoints, strict=True))))
        self.round_questions[0] += 1
        if self.extra_questions([q], {q.qid: gathered(parts)[0]}):
            self.round_questions[1] += 1
            parts += await asyncio.gather(*(self.stage1(q, a, e, self.rounds[1], 1)
                                            for a, e in zip(self.answers, endpoints, strict=True)))
        self._tick("answer")
        return gathered(parts)

    async def stage2(self, q: Question, first: tuple[list[Sample], list[ErrorRecord]], endpoint: Endpoint | None) -> None:
        """Ask the Evaluate Agent about the chosen Answer text; trace the question."""
        samples, api_errors = first
        chosen = chosen_reply(samples)
        evaluation = None
        if chosen is not None and chosen.text is not None:
            prompt = evaluate_prompt(q, chosen.text)
            try:
                reply = await self._ask(self.evaluate, endpoint, lambda e: e.complete(
                    prompt, temperature=self.inf.temperature, max_tokens=self.inf.max_tokens))
                evaluation = Evaluation(model=self.evaluate.model, **_reply_fields(reply, q))
            except _NotAsked as why:
                api_errors = [*api_errors, self._not_asked(q, "evaluate", why)]
                evaluation = Evaluation(model=self.evaluate.model, error=why.reason)
            except EndpointError as e:
                api_errors = [*api_errors, self._api_error(q, "evaluate", e)]
                evaluation = Evaluation(model=self.evaluate.model, attempts=e.attempts, error=e.reason)
        extra = int(len(samples) > len(self.answers) * self.inf.votes)
        few_shot = {label: shots.ids(q) for label, shots in self.fewshot.items() if shots.setting.k}
        record = trace_record(q, self.keys[q.qid], self.labels, samples, api_errors, evaluation, extra, few_shot)
        self.trace.append(record.line())
        self._tick("evaluate")

    async def pipelined(self, todo: list[Question], urls: dict[str, str | None], evaluate_url: str | None) -> None:
        """Each question goes to stage 2 as soon as its stage 1 ends."""
        async with self._endpoints(self.answers, urls) as answers, self._endpoint(self.evaluate, evaluate_url) as e:
            async def one(q: Question) -> None:
                await self.stage2(q, await self.stage1_all(q, answers), e)

            with self._progress("answer", "evaluate", total=len(todo)):
                await asyncio.gather(*(one(q) for q in todo))

    async def staged_answer(
        self, todo: list[Question], agents: list[Agent], url: str | None, round_: int = 0
    ) -> list[list[list[tuple[Sample, ErrorRecord | None]]]]:
        """Stage 1 (one round) of one unit's agents for every question: results[question][agent]."""
        async with self._endpoints(agents, {a.label: url for a in agents}) as endpoints:
            label = "answer" + ("" if len(self.answers) == 1 else f" ({', '.join(a.label for a in agents)})")
            label += " (extra votes)" if round_ else ""
            with self._progress("answer", total=len(todo), names={"answer": label}):
                async def one(q: Question) -> list[list[tuple[Sample, ErrorRecord | None]]]:
                    parts = await asyncio.gather(*(self.stage1(q, a, e, self.rounds[round_], round_)
                                                   for a, e in zip(agents, endpoints, strict=True)))
                    self._tick("answer")
                    return list(parts)

                return list(await asyncio.gather(*(one(q) for q in todo)))

    async def staged_evaluate(
        self, todo: list[Question], first: dict[str, tuple[list[Sample], list[ErrorRecord]]], url: str | None
    ) -> None:
        async with self._endpoint(self.evaluate, url) as e:
            with self._progress("evaluate", total=len(todo)):
                await asyncio.gather(*(self.stage2(q, first[q.qid], e) for q in todo))

    def _up(self, unit: Unit) -> Any:
        """The unit's server started for a block (see `_serving`), waited for until the deadline at most."""
        return self._serving(unit.url(self.left()), unit.agents)

    def _needed(self, unit: Unit, todo: Sequence[Question], round_: int = 0) -> bool:
        return any(self.needs_answer(q, a, self.rounds[round_]) for a in unit.agents for q in todo)

    def _needed_in_any_round(self, unit: Unit, todo: Sequence[Question]) -> bool:
        """A sample of the first round to ask, or of the extra round where the first is cached
        and calls for it (where it is not, the first round's asking needs the server anyway)."""
        if self._needed(unit, todo):
            return True
        open_ = [q for q in todo if (letters := self.cached_letters(q, self.rounds[0])) is not None
                 and self.inf.extra_votes and wants_extra(letters, self.inf.extra_when)]
        return self._needed(unit, open_, 1)

    def _staged_rounds(self, todo: list[Question], units: list[Unit]) -> dict[str, tuple[list[Sample], list[ErrorRecord]]]:
        """Stage 1 unit by unit: the first round, then the extra round for the questions it
        leaves open. One unit stays up for both rounds; several are served again for the second."""
        parts: dict[tuple[str, str], list[list[tuple[Sample, ErrorRecord | None]]]] = {}

        def ask(unit: Unit, url: str | None, questions: list[Question], round_: int) -> None:
            results = asyncio.run(self.staged_answer(questions, unit.agents, url, round_))
            for q, per_agent in zip(questions, results, strict=True):
                for a, part in zip(unit.agents, per_agent, strict=True):
                    parts.setdefault((q.qid, a.label), []).append(part)

        def samples(questions: Sequence[Question]) -> dict[str, list[Sample]]:
            return {q.qid: gathered([p for a in self.answers for p in parts[(q.qid, a.label)]])[0] for q in questions}

        more: list[Question] = []
        if len(units) == 1:
            unit = units[0]
            with self._up(unit) if self._needed_in_any_round(unit, todo) else nullcontext() as url:
                ask(unit, url, todo, 0)
                more = self.extra_questions(todo, samples(todo))
                if more:
                    ask(unit, url, more, 1)
        else:
            for unit in units:
                with self._up(unit) if self._needed(unit, todo) else nullcontext() as url:
                    ask(unit, url, todo, 0)
            more = self.extra_questions(todo, samples(todo))
            for unit in units if more else []:
                with self._up(unit) if self._needed(unit, more, 1) else nullcontext() as url:
                    ask(unit, url, more, 1)
        self.round_questions = [len(todo), len(more)]
        # per question: the first round's samples of every model, then the extra round's
        return {q.qid: gathered([parts[(q.qid, a.label)][r] for r in range(len(parts[(q.qid, self.labels[0])]))
                                 for a in self.answers]) for q in todo}

    def execute(self, todo: list[Question]) -> None:
        """Serve or reach what is needed (no Answer model whose samples are all cached), then ask.
        Staged: the Answer models' servers one after another, then the Evaluate model's. Every
        model an adapter of one base (`one_server`): one vLLM server for all, pipelined."""
        if self.one_server:
            every = [a.loaded for a in [*self.answers, self.evaluate] if a.loaded]
            one = _url_of(served_adapters(every, free_port(), startup_timeout=self.left()))
            with self._serving(one, [*self.answers, self.evaluate]) as url:
                asyncio.run(self.pipelined(todo, {a.label: url for a in self.answers}, url))
            return
        units = serving_units(self.answers)
        if self.inf.mode == "pipelined":
            with ExitStack() as stack:
                urls: dict[str, str | None] = {}
                for unit in units:  # every Answer model up at once, and the Evaluate model
                    if self._needed_in_any_round(unit, todo):
                        served = stack.enter_context(self._up(unit))
                        urls.update((a.label, served) for a in unit.agents)
                e = stack.enter_context(self._up(Unit([self.evaluate])))
                asyncio.run(self.pipelined(todo, urls, e))
            return
        first = self._staged_rounds(todo, units)
        any_text = any(chosen_reply(samples) is not None for samples, _ in first.values())
        with self._up(Unit([self.evaluate])) if any_text else nullcontext() as url:  # no text: only trace failures
            asyncio.run(self.staged_evaluate(todo, first, url))


@contextmanager
def _url_of(serving: Any) -> Iterator[str]:
    """The URL of a `served...` context manager's Serving."""
    with serving as s:
        yield s.url


def _compact_trace(path: Path, current: list[TraceRecord]) -> None:
    """Rewrite the trace with one line per question: this run's records in input order, then
    the latest record of any other question an earlier run traced."""
    ours = {r.id for r in current}
    others: dict[str | None, dict] = {}  # keyed by id; a line without one (not ours) kept once
    for record in read_records(path):
        if record.get("id") not in ours:
            others[record.get("id")] = record
    atomic_write_jsonl(path, [*(r.line() for r in current), *others.values()])


def _agent_record(agent: Agent) -> dict[str, Any]:
    """The agent's model; for a served one, the recipe and split its training manifest records."""
    record: dict[str, Any] = {"model": agent.model, "identity": agent.identity, "url": agent.url}
    if agent.loaded and not agent.url:
        paths = role_paths(agent.loaded.recipe)
        trained = read_manifest(paths, agent.loaded.recipe.role)
        if trained is not None:
            record |= {"manifest": str(paths.manifest), "recipe": trained.get("recipe"), "trained": trained.get("started"),
                       "split": ((trained.get("data") or {}).get("dataset") or {}).get("split")}
    return record


def infer(*, out_dir: str | Path, **kwargs: Any) -> InferSummary:
    """`_infer` holding the lock of `out_dir`: two commands never write one run folder."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out-dir {out} is a file, not a directory")
    with run_lock(out, "orchestrator infer"):
        return _infer(out_dir=out, **kwargs)


def _infer(
    *,
    pipeline: Loaded[PipelineRecipe],
    input_path: str | Path,
    out_dir: str | Path,
    answer: Loaded[RoleRecipe] | None = None,
    answers: Sequence[Loaded[RoleRecipe] | None] | None = None,
    evaluate: Loaded[RoleRecipe] | None = None,
    limit: int | None = None,
    skip_invalid: bool = False,
    endpoint_recipe: Loaded[RoleRecipe] | None = None,
) -> InferSummary:
    """Answer every question of `input_path` (the first `limit` problems) into `out_dir`, with
    the pipeline recipe's `inference:` settings (flags folded in). A model without a URL there
    is served from its role recipe: `answers[i]` for the i-th of `inference.answer_models` (or
    `answer` for the one Answer model), `evaluate`. An Answer model at an endpoint is asked the
    prompts of `endpoint_recipe`'s fewshot setting (inference.answer_recipe: what it was trained on)."""
    started = time.monotonic()  # inference.deadline_s counts from here
    inf = pipeline.recipe.inference
    dataset = read_reporting(input_path, "infer", skip_invalid)
    dataset = Dataset(dataset.path, dataset.problems[:limit])
    questions = dataset.questions
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out-dir {out} is a file, not a directory")
    listed = inf.answer_models
    recipes = list(answers) if answers is not None else [answer] * len(listed)
    if len(recipes) != len(listed):
        raise UserError(f"{len(recipes)} Answer recipes for the {len(listed)} Answer models of inference.answer_models")
    answer_agents = make_answer_agents(listed, recipes, inf.api_key_env)
    evaluate_agent = make_agent("evaluate", url=inf.evaluate_url, model=inf.evaluate_model,
                            api_key_env=inf.api_key_env, loaded=evaluate)
    agents = [*answer_agents, evaluate_agent]
    shared = share_one_server(answer_agents, evaluate_agent)
    mode = "pipelined on one vLLM server" if shared else inf.mode
    several = len(answer_agents) > 1
    for line in pipeline.overridden_lines() + [f"{a.label if several and a.role == 'answer' else a.role}: {line}"
                                              for a in agents
                                              for line in (a.loaded.overridden_lines() if a.loaded else [])]:
        say("infer", line)

    def given(a: Agent) -> dict[str, Any]:
        return {"agent": a.describe(), "overrides": a.loaded.overridden() if a.loaded else {}}

    shots: dict[str, Fewshot] = {}  # each Answer model's worked examples (its recipe's fewshot)
    for a in answer_agents:
        follows = a.loaded or endpoint_recipe
        shots[a.label] = examples_for(questions, pipeline.recipe, follows.recipe if follows else None,
                                      trained=True)
    # the run record: what this run was given besides the recipe files
    atomic_write_json(out / "run.json", {
        "pipeline": str(pipeline.path), "overrides": pipeline.overridden(),
        "answer": given(answer_agents[0]), "evaluate": given(evaluate_agent),
        **({"answers": [{"label": a.label, **given(a)} for a in answer_agents]} if several else {}),
        # for `compare`: the input, the settings in effect and each model (a served one's recipe and split)
        "input": str(dataset.path), "limit": limit, "inference": inf.model_dump(),
        "fewshot": {label: f.record() for label, f in shots.items()},
        "models": {**{"answer" if not several else f"answer.{a.label}": _agent_record(a) for a in answer_agents},
                   "evaluate": _agent_record(evaluate_agent)},
    })
    if pipeline.recipe.inference.fallback == "prior":
        say("infer", pipeline.data_line("data.train"))
    fallback = fallback_letter(pipeline.recipe)

    run = _Run(out, questions, inf, answer_agents, evaluate_agent, shots)
    if inf.deadline_s is not None:
        run.deadline = started + inf.deadline_s - deadline_margin(inf.deadline_s)
    writing = threading.Lock()  # the deadline's write and the last one

    def write(records: list[TraceRecord]) -> None:
        with writing:
            write_submission(out / "submission.jsonl", dataset, {r.id: r.final for r in records})

    def at_deadline() -> None:  # on a timer thread: the ledgers are only read
        records = [with_fallback(run.snapshot(q), fallback, q.letters) for q in questions]
        write(records)
        sources = Counter(r.source for r in records)
        say("infer", f"deadline: {out / 'submission.jsonl'} written, every question answered ("
                     + ", ".join(f"{k} {v}" for k, v in sorted(sources.items())) + "); asking stops")

    with run.ledgers():
        todo = [q for q in questions if not run.is_done(q)]
        # done by an earlier run under another key: a model, a prompt or the sampling changed
        done_before = {r.get("id") for r in run.trace.records.values() if r.get("status") == "done"}
        stale = sum(q.qid in done_before for q in todo)
        described = "; ".join(a.describe() for a in answer_agents)
        extra = f"+{inf.extra_votes} votes where {inf.extra_when}" if inf.extra_votes else ""
        k = sorted({f.setting.k for f in shots.values() if f.setting.k})
        say("infer", f"{len(questions)} questions, {len(questions) - len(todo)} already done; mode {mode}, "
                     f"votes {inf.votes}{f' ({extra} at {inf.extra_temperature})' if extra else ''}"
                     f"{f' x {len(answer_agents)} models' if several else ''}"
                     f"{f'; fewshot.k {k[0]}' if len(k) == 1 else f'; fewshot.k {k}' if k else ''}; "
                     f"answer: {described}; evaluate: {evaluate_agent.describe()}"
                     + ("; several samples go in one request (n) where the endpoint returns them, else one "
                        "request each" if len(run.temps) > 1 else ""))
        if stale:
            say("infer", f"{stale} questions an earlier run answered are asked again: a model, the prompts or the "
                         "sampling changed since (their old answers stay in trace.jsonl history until replaced)")
        timer = threading.Timer(max(0.0, run.deadline - time.monotonic()), at_deadline) \
            if run.deadline is not None and todo else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            if todo:
                run.execute(todo)
        except BaseException:
            if timer:
                timer.cancel()
            raise
        for line in run.sampling_lines():
            say("infer", line)
        # every question is traced now: done by an earlier run or by this one (failed or not)
        records = [with_fallback(run.traced(q), fallback, q.letters) for q in questions]
    _compact_trace(out / "trace.jsonl", records)
    atomic_write_jsonl(out / "errors.jsonl", [e.line() for r in records for e in r.errors])
    write(records)
    if timer:  # only now: until this write, the deadline's is the one in time
        timer.cancel()

    summary = InferSummary(out, questions=len(questions), resumed=len(questions) - len(todo), stale=stale,
                           requests=run.requests, seconds=time.monotonic() - started, failures=run.failures,
                           rounds=list(zip(run.round_questions, run.round_requests, strict=True)), extra=extra)
    for r in records:
        summary.answered += r.final is not None
        summary.failed += r.status == "failed" and any(e.kind == "api" for e in r.errors)
        summary.not_asked += any(e.kind == "not_asked" for e in r.errors)
        summary.sources[r.source] += 1
        summary.errors.update(f"{e.kind} ({e.stage})" for e in r.errors)  # per stage: a question can have both
    return summary
