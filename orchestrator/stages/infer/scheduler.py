"""The scheduler of one infer run: which samples to ask (the rest are read from stage1.jsonl),
the Answer rounds (the first `votes`, then extra votes where they leave a question open), the
Evaluate step, staged (one server after another) or pipelined (all up at once), and each
question's trace line. Every request goes through the deadline guard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from orchestrator.core.common.ledger import Ledger, stable_key, text_hash
from orchestrator.core.common.progress import bar
from orchestrator.core.data.competition import Question
from orchestrator.core.data.fewshot import Fewshot
from orchestrator.core.data.prompts import answer_prompt, evaluate_prompt
from orchestrator.core.recipes.schema import InferenceSection
from orchestrator.core.run_folders.trace import ErrorRecord, Evaluation, Sample, TraceRecord, chosen_reply
from orchestrator.core.serving.agents import Agent
from orchestrator.core.serving.endpoints import Endpoint, EndpointError
from orchestrator.core.serving.grouping import ServerPlan
from orchestrator.stages.infer.deadline import Deadline, Guard, NotAsked
from orchestrator.stages.infer.servers import Unit, serving_units
from orchestrator.stages.infer.votes import gathered, reply_fields, temperatures, trace_record, wants_extra


class Scheduler:
    """Asks the questions of one run: `execute(todo)` serves or reaches each model for as long
    as it is needed, and traces every question in trace.jsonl as it ends."""

    def __init__(self, out_dir: Path, questions: list[Question], inference: InferenceSection, answers: list[Agent],
                 evaluate: Agent, fewshot: dict[str, Fewshot] | None = None, *, plan: ServerPlan,
                 deadline: Deadline | None = None):
        self.out_dir, self.inf = out_dir, inference
        self.answers, self.evaluate = answers, evaluate
        self.plan = plan  # which server serves which model (servers.share_servers)
        self.guard = Guard(deadline or Deadline())
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

    @property
    def deadline(self) -> Deadline:
        return self.guard.deadline

    def _not_asked(self, q: Question, stage: str, why: NotAsked, model: str | None = None) -> ErrorRecord:
        return ErrorRecord(id=q.qid, stage=stage, kind="not_asked", reason=why.reason,
                       model=model if len(self.answers) > 1 else None)

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
                             self._not_asked(q, "answer", NotAsked("deadline"), a.label)))
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
        identities = [a.cache_identity for a in self.answers]
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
            evaluate_model=self.evaluate.cache_identity,
            sampling=sampling,
        )

    def sample_key(self, q: Question, agent: Agent, i: int) -> str:
        """A sample's key names only its own model, so adding a model reuses the others' samples."""
        return stable_key(qid=q.qid, prompt=text_hash(self.prompts[agent.label][q.qid]), model=agent.cache_identity,
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
        # the one bound on requests in flight; the guard is asked as each one's turn comes
        async with Endpoint(url, agent.model, agent.api_key, concurrency=inf.concurrency, timeout=inf.timeout,
                            max_retries=inf.max_retries, before_send=lambda: self.guard.check(agent)) as endpoint:
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
                replies, requests = await self.guard.ask(agent, endpoint, lambda e: e.complete_n(
                    prompt, len(numbers), temperature=temperature, max_tokens=self.inf.max_tokens))
            except NotAsked as why:
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
                fields = reply_fields(reply, q)
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
                reply = await self.guard.ask(self.evaluate, endpoint, lambda e: e.complete(
                    prompt, temperature=self.inf.temperature, max_tokens=self.inf.max_tokens))
                evaluation = Evaluation(model=self.evaluate.model, **reply_fields(reply, q))
            except NotAsked as why:
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
        """The unit's server started for a block (see Guard.serving), waited for until the deadline at most."""
        return self.guard.serving(unit.url(self.deadline.left()), unit.agents)

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
        model an adapter of one base (`plan.everyone`): one vLLM server for all, pipelined."""
        if self.plan.everyone:
            with self._up(Unit([*self.answers, self.evaluate])) as url:
                asyncio.run(self.pipelined(todo, {a.label: url for a in self.answers}, url))
            return
        units = serving_units(self.answers, self.plan)
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


