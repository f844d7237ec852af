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
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import (
    AsyncExitStack,
    ExitStack,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.agents import Agent, agent_url, make_agent
from orchestrator.core.answers import extract_choice
from orchestrator.core.competition import Dataset, Question, read_reporting, write_submission
from orchestrator.core.endpoints import Endpoint, EndpointError, Reply
from orchestrator.core.errors import UserError
from orchestrator.core.files import atomic_write_json, atomic_write_jsonl
from orchestrator.core.fixes import fallback_letter
from orchestrator.core.ledger import Ledger, read_records, stable_key, text_hash
from orchestrator.core.progress import bar, say
from orchestrator.core.prompts import answer_prompt, evaluate_prompt
from orchestrator.core.recipes import AnswerModel, InferenceSection, Loaded, PipelineRecipe, RoleRecipe
from orchestrator.core.trace import AnswerStep, Evaluation, Problem, Sample, Source, TraceRecord, chosen_reply

@dataclass
class Unit:
    """Answer agents reached through one server: an endpoint, a served model, or one
    vLLM server holding several adapters of one base."""

    agents: list[Agent]

    @contextmanager
    def url(self) -> Iterator[str]:
        first = self.agents[0]
        if not first.lora:
            with agent_url(first) as url:
                yield url
            return
        from orchestrator.core.process import free_port
        from orchestrator.core.serving import served_adapters

        with served_adapters([a.loaded for a in self.agents if a.loaded], free_port()) as serving:
            yield serving.url


@dataclass
class InferSummary:
    out_dir: Path
    questions: int = 0
    answered: int = 0
    resumed: int = 0  # finished by an earlier run
    failed: int = 0  # a request failed after retries: asked again next run
    sources: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    requests: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

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
            ("failed requests (asked again next run)", self.failed),
            ("errors", ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"),
            ("requests sent", self.requests),
            ("questions per second", f"{self.questions_per_second:.2f}"),
            ("submission", self.out_dir / "submission.jsonl"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# ---------------------------------------------------------------- pure rules


def temperatures(inference: InferenceSection) -> list[float]:
    """One temperature per Answer sample: `temperature` for a single one, else `vote_temperature`."""
    if inference.votes == 1:
        return [inference.temperature]
    return [inference.vote_temperature] * inference.votes


def gathered(parts: Sequence[Sequence[tuple[Sample, Problem | None]]]) -> tuple[list[Sample], list[Problem]]:
    """The Answer models' samples in the order the models are listed, and their API failures,
    each numbered by its sample's position among all (when there are several)."""
    pairs = [pair for part in parts for pair in part]
    several = len(pairs) > 1
    return [s for s, _ in pairs], [p.model_copy(update={"sample": n if several else None})
                                   for n, (_, p) in enumerate(pairs) if p]


def trace_record(
    q: Question, key: str, models: list[str], samples: list[Sample], api_errors: list[Problem],
    evaluation: Evaluation | None,
) -> TraceRecord:
    """The trace line of a question: final answer, its source, and every problem found.
    `samples` are the Answer models' samples in the order the models are listed; `models` their labels."""
    answer = AnswerStep.of(models, samples)
    vote, read = answer.letter, chosen_reply(samples)  # read is not None when there is a vote
    eval_letter = evaluation.letter if evaluation else None
    source: Source
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
            problems.append(Problem(id=q.qid, stage="answer", kind="unparseable", text=s.text,
                                    sample=i if several else None, model=s.model if ensemble else None))
    if evaluation and evaluation.text is not None and eval_letter is None:
        problems.append(Problem(id=q.qid, stage="evaluate", kind="unparseable", text=evaluation.text))
    if evaluation and eval_letter and read and vote and eval_letter != vote:
        problems.append(Problem(id=q.qid, stage="evaluate", kind="disagreement", answer_letter=vote,
                                evaluate_letter=eval_letter, answer_text=read.text, evaluate_text=evaluation.text))
    if final is None:
        problems.append(Problem(id=q.qid, stage="final", kind="no_answer"))
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

    from orchestrator.core.llamafactory import role_paths
    from orchestrator.core.serving import adapter_version, check_adapters, lora_group_key

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
                a.identity = f"{a.loaded.recipe.run_name}@lora-{adapter_version(role_paths(a.loaded.recipe))}"
    return agents


def share_one_server(answers: list[Agent], evaluate: Agent) -> bool:
    """When every model is served as an adapter of one base with vLLM (see serving.one_server),
    mark them all to be served by one vLLM server: the whole run is pipelined on it."""
    from orchestrator.core.serving import check_adapters, one_server

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
    from orchestrator.core.serving import lora_group_key

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
                 evaluate: Agent):
        self.out_dir, self.inf = out_dir, inference
        self.answers, self.evaluate = answers, evaluate
        self.one_server = all(a.lora for a in [*answers, evaluate])  # see share_one_server
        self.labels = [a.label for a in answers]
        self.temps = temperatures(inference)
        self.prompts = {q.qid: answer_prompt(q) for q in questions}
        self.keys = {q.qid: self._trace_key(q) for q in questions}
        self.requests = 0
        self.failures: list[str] = []
        self._bars: dict[str, Any] = {}

    def _trace_key(self, q: Question) -> str:
        # one Answer model: the key it always had, so its finished questions stay finished
        identities = [a.identity for a in self.answers]
        return stable_key(
            qid=q.qid, answer_prompt=text_hash(self.prompts[q.qid]),
            evaluate_prompt=text_hash(evaluate_prompt(q, "")),
            answer_model=identities[0] if len(identities) == 1 else identities,
            evaluate_model=self.evaluate.identity,
            sampling={"answer": self.temps, "evaluate": self.inf.temperature, "max_tokens": self.inf.max_tokens},
        )

    def sample_key(self, q: Question, agent: Agent, i: int) -> str:
        """A sample's key names only its own model, so adding a model reuses the others' samples."""
        return stable_key(qid=q.qid, prompt=text_hash(self.prompts[q.qid]), model=agent.identity,
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

    def needs_answer(self, q: Question, agent: Agent) -> bool:
        return any(self.sample_key(q, agent, i) not in self.samples for i in range(len(self.temps)))

    def _api_error(self, q: Question, stage: str, e: EndpointError, model: str | None = None) -> Problem:
        """The failure as a problem (its sample's position is set by `gathered`)."""
        model = model if len(self.answers) > 1 else None
        error = Problem(id=q.qid, stage=stage, kind="api", reason=e.reason, attempts=e.attempts, detail=e.detail,
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

    async def stage1(self, q: Question, agent: Agent, endpoint: Endpoint | None) -> list[tuple[Sample, Problem | None]]:
        """One Answer model's samples of `q` (from stage1.jsonl when there), each with its API failure."""
        prompt = self.prompts[q.qid]

        async def sample(i: int) -> tuple[Sample, Problem | None]:
            key = self.sample_key(q, agent, i)
            cached = self.samples.get(key)
            if cached is not None:
                return Sample.model_validate({**cached, "model": agent.label, "index": i}), None
            assert endpoint is not None, "an endpoint is up for every model with a sample to ask"
            try:
                reply = await endpoint.complete(prompt, temperature=self.temps[i], max_tokens=self.inf.max_tokens)
            except EndpointError as e:
                return (Sample(model=agent.label, index=i, attempts=e.attempts, error=e.reason),
                        self._api_error(q, "answer", e, agent.label))
            fields = _reply_fields(reply, q)
            self.samples.append({"key": key, "id": q.qid, "model": agent.label, "sample": i, **fields})
            return Sample(model=agent.label, index=i, **fields), None

        return list(await asyncio.gather(*(sample(i) for i in range(len(self.temps)))))

    async def stage1_all(self, q: Question, endpoints: list[Endpoint | None]) -> tuple[list[Sample], list[Problem]]:
        """Every Answer model's samples of `q`, in the order the models are listed."""
        parts = await asyncio.gather(*(self.stage1(q, a, e) for a, e in zip(self.answers, endpoints, strict=True)))
        self._tick("answer")
        return gathered(parts)

    async def stage2(self, q: Question, first: tuple[list[Sample], list[Problem]], endpoint: Endpoint | None) -> None:
        """Ask the Evaluate Agent about the chosen Answer text; trace the question."""
        samples, api_errors = first
        chosen = chosen_reply(samples)
        evaluation = None
        if chosen is not None and chosen.text is not None:
            assert endpoint is not None, "the Evaluate model is up when a sample has text"
            prompt = evaluate_prompt(q, chosen.text)
            try:
                reply = await endpoint.complete(
                    prompt, temperature=self.inf.temperature, max_tokens=self.inf.max_tokens
                )
                evaluation = Evaluation(model=self.evaluate.model, **_reply_fields(reply, q))
            except EndpointError as e:
                api_errors = [*api_errors, self._api_error(q, "evaluate", e)]
                evaluation = Evaluation(model=self.evaluate.model, attempts=e.attempts, error=e.reason)
        record = trace_record(q, self.keys[q.qid], self.labels, samples, api_errors, evaluation)
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
        self, todo: list[Question], agents: list[Agent], url: str | None
    ) -> list[list[list[tuple[Sample, Problem | None]]]]:
        """Stage 1 of one unit's agents for every question: results[question][agent]."""
        async with self._endpoints(agents, {a.label: url for a in agents}) as endpoints:
            label = "answer" + ("" if len(self.answers) == 1 else f" ({', '.join(a.label for a in agents)})")
            with self._progress("answer", total=len(todo), names={"answer": label}):
                async def one(q: Question) -> list[list[tuple[Sample, Problem | None]]]:
                    parts = await asyncio.gather(*(self.stage1(q, a, e) for a, e in zip(agents, endpoints, strict=True)))
                    self._tick("answer")
                    return list(parts)

                return list(await asyncio.gather(*(one(q) for q in todo)))

    async def staged_evaluate(
        self, todo: list[Question], first: dict[str, tuple[list[Sample], list[Problem]]], url: str | None
    ) -> None:
        async with self._endpoint(self.evaluate, url) as e:
            with self._progress("evaluate", total=len(todo)):
                await asyncio.gather(*(self.stage2(q, first[q.qid], e) for q in todo))

    def _needed(self, unit: Unit, todo: list[Question]) -> bool:
        return any(self.needs_answer(q, a) for a in unit.agents for q in todo)

    def execute(self, todo: list[Question]) -> None:
        """Serve or reach what is needed (no Answer model whose samples are all cached), then ask.
        Staged: the Answer models' servers one after another, then the Evaluate model's. Every
        model an adapter of one base (`one_server`): one vLLM server for all, pipelined."""
        if self.one_server:
            from orchestrator.core.process import free_port
            from orchestrator.core.serving import served_adapters

            every = [a.loaded for a in [*self.answers, self.evaluate] if a.loaded]
            with served_adapters(every, free_port()) as serving:
                asyncio.run(self.pipelined(todo, {a.label: serving.url for a in self.answers}, serving.url))
            return
        units = serving_units(self.answers)
        if self.inf.mode == "pipelined":
            with ExitStack() as stack:
                urls: dict[str, str | None] = {}
                for unit in units:  # every Answer model up at once, and the Evaluate model
                    if self._needed(unit, todo):
                        served = stack.enter_context(unit.url())
                        urls.update((a.label, served) for a in unit.agents)
                e = stack.enter_context(agent_url(self.evaluate))
                asyncio.run(self.pipelined(todo, urls, e))
            return
        by_agent: dict[str, list[list[tuple[Sample, Problem | None]]]] = {}
        for unit in units:
            with unit.url() if self._needed(unit, todo) else nullcontext() as url:
                results = asyncio.run(self.staged_answer(todo, unit.agents, url))
            for a, column in zip(unit.agents, zip(*results, strict=True), strict=True):
                by_agent[a.label] = list(column)
        first = {q.qid: gathered([by_agent[a.label][n] for a in self.answers]) for n, q in enumerate(todo)}
        any_text = any(chosen_reply(samples) is not None for samples, _ in first.values())
        with agent_url(self.evaluate) if any_text else nullcontext() as url:  # no text: only trace failures
            asyncio.run(self.staged_evaluate(todo, first, url))


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
        from orchestrator.core.llamafactory import role_paths

        manifest = role_paths(agent.loaded.recipe).manifest
        if manifest.exists():
            trained = json.loads(manifest.read_text(encoding="utf-8"))
            record |= {"manifest": str(manifest), "recipe": trained.get("recipe"), "trained": trained.get("started"),
                       "split": ((trained.get("data") or {}).get("dataset") or {}).get("split")}
    return record


def infer(
    *,
    pipeline: Loaded[PipelineRecipe],
    input_path: str | Path,
    out_dir: str | Path,
    answer: Loaded[RoleRecipe] | None = None,
    answers: Sequence[Loaded[RoleRecipe] | None] | None = None,
    evaluate: Loaded[RoleRecipe] | None = None,
    limit: int | None = None,
    skip_invalid: bool = False,
) -> InferSummary:
    """Answer every question of `input_path` (the first `limit` problems) into `out_dir`, with
    the pipeline recipe's `inference:` settings (flags folded in). A model without a URL there
    is served from its role recipe: `answers[i]` for the i-th of `inference.answer_models` (or
    `answer` for the one Answer model), `evaluate`."""
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

    # the run record: what this run was given besides the recipe files
    atomic_write_json(out / "run.json", {
        "pipeline": str(pipeline.path), "overrides": pipeline.overridden(),
        "answer": given(answer_agents[0]), "evaluate": given(evaluate_agent),
        **({"answers": [{"label": a.label, **given(a)} for a in answer_agents]} if several else {}),
        # for `compare`: the input, the settings in effect and each model (a served one's recipe and split)
        "input": str(dataset.path), "limit": limit, "inference": inf.model_dump(),
        "models": {**{"answer" if not several else f"answer.{a.label}": _agent_record(a) for a in answer_agents},
                   "evaluate": _agent_record(evaluate_agent)},
    })
    if pipeline.recipe.inference.fallback == "prior":
        say("infer", pipeline.data_line("data.train"))
    fallback = fallback_letter(pipeline.recipe)

    started = time.monotonic()
    run = _Run(out, questions, inf, answer_agents, evaluate_agent)
    with run.ledgers():
        todo = [q for q in questions if not run.is_done(q)]
        described = "; ".join(a.describe() for a in answer_agents)
        say("infer", f"{len(questions)} questions, {len(questions) - len(todo)} already done; mode {mode}, "
                     f"votes {inf.votes}{f' x {len(answer_agents)} models' if several else ''}; "
                     f"answer: {described}; evaluate: {evaluate_agent.describe()}")
        if todo:
            run.execute(todo)
        # every question is traced now: done by an earlier run or by this one (failed or not)
        records = [with_fallback(run.traced(q), fallback, q.letters) for q in questions]
    _compact_trace(out / "trace.jsonl", records)
    atomic_write_jsonl(out / "errors.jsonl", [e.line() for r in records for e in r.errors])
    write_submission(out / "submission.jsonl", dataset, {r.id: r.final for r in records})

    summary = InferSummary(out, questions=len(questions), resumed=len(questions) - len(todo),
                           requests=run.requests, seconds=time.monotonic() - started, failures=run.failures)
    for r in records:
        summary.answered += r.final is not None
        summary.failed += r.status == "failed"
        summary.sources[r.source] += 1
        summary.errors.update(e.kind for e in r.errors)
    return summary
