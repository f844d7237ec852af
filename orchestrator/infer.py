"""Stage: answer every question with two agents, resumably.

The Answer Agent (Answer model) writes reasoning and a likely answer, `votes` times; the
Evaluate Agent (Evaluate model) reads the Answer text that agrees with the majority and gives
the final letter; the Error Agent lists every problem. In the output directory:

  stage1.jsonl      every Answer sample the moment it arrives (a crash in stage 2 redoes none)
  trace.jsonl       one line per question: both stages' texts, letters, votes, final answer,
                    its source, timings, and the problems found
  errors.jsonl      one record per problem: API failure, unparseable output, disagreement, no answer
  submission.jsonl  the input in competition format with every question's answer filled

Records are keyed by what determines them (prompts, models, sampling), so re-running the same
command sends no request for finished questions and changed settings are never taken for done
work. A question with a request that failed after retries is traced as `failed` and asked again
by the next run; its submission answer falls back to the Answer letter meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.answers import extract_choice
from orchestrator.data import Dataset, Question, read_reporting, write_submission
from orchestrator.errors import StageFailed, UserError
from orchestrator.files import atomic_write_json, atomic_write_jsonl
from orchestrator.ledger import Ledger, read_records, stable_key, text_hash
from orchestrator.paths import project_root
from orchestrator.progress import bar, say
from orchestrator.prompts import answer_prompt, evaluate_prompt
from orchestrator.recipes import InferenceSection, Loaded, PipelineRecipe, RoleRecipe

REPLY_FIELDS = ("text", "letter", "latency", "attempts", "finish_reason")


@dataclass
class Agent:
    """One stage's model: an endpoint we were given, or a role recipe whose merged model we serve."""

    role: str
    model: str  # the name sent in requests
    identity: str  # the model in cache keys (a served model's includes its merge)
    api_key: str = field(repr=False)
    url: str | None = None
    loaded: Loaded[RoleRecipe] | None = None

    def describe(self) -> str:
        if self.url or self.loaded is None:
            return f"{self.url} ({self.model})"
        return f"serve runs/{self.loaded.recipe.run_name}/merged"


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


def majority(letters: list[str | None]) -> str | None:
    """The most frequent letter; a tie goes to the earliest sample among the tied (the first
    sample's letter when it is one of them)."""
    counts = Counter(letter for letter in letters if letter)
    if not counts:
        return None
    top = max(counts.values())
    return next(letter for letter in letters if letter and counts[letter] == top)


def temperatures(inference: InferenceSection) -> list[float]:
    """One temperature per Answer sample: `temperature` for a single one, else `vote_temperature`."""
    if inference.votes == 1:
        return [inference.temperature]
    return [inference.vote_temperature] * inference.votes


def chosen_sample(samples: list[dict | None]) -> int | None:
    """The index of the Answer text the Evaluate Agent reads: the first agreeing with the majority."""
    vote = majority([s["letter"] if s else None for s in samples])
    answered = [i for i, s in enumerate(samples) if s]
    return next((i for i in answered if samples[i]["letter"] == vote), answered[0] if answered else None)


def trace_record(
    q: Question, key: str, samples: list[dict | None], api_errors: list[dict],
    evaluation: dict | None, answer_model: str, evaluate_model: str,
) -> dict[str, Any]:
    """The trace line of a question: final answer, its source, and every problem found."""
    letters = [s["letter"] if s else None for s in samples]
    vote = majority(letters)
    chosen = chosen_sample(samples)
    eval_letter = evaluation.get("letter") if evaluation else None
    if eval_letter:
        final, source = eval_letter, "evaluate"
    elif vote:
        final, source = vote, "answer_fallback" if len(samples) == 1 else "vote_fallback"
    else:
        final, source = None, "none"

    several = len(samples) > 1
    problems = list(api_errors)
    for i, s in enumerate(samples):
        if s and s["letter"] is None:
            problems.append({"id": q.qid, "stage": "answer", "kind": "unparseable", "text": s["text"],
                             **({"sample": i} if several else {})})
    if evaluation and "text" in evaluation and eval_letter is None:
        problems.append({"id": q.qid, "stage": "evaluate", "kind": "unparseable", "text": evaluation["text"]})
    if eval_letter and vote and eval_letter != vote:
        problems.append({"id": q.qid, "stage": "evaluate", "kind": "disagreement", "answer_letter": vote,
                         "evaluate_letter": eval_letter, "answer_text": samples[chosen]["text"],
                         "evaluate_text": evaluation["text"]})
    if final is None:
        problems.append({"id": q.qid, "stage": "final", "kind": "no_answer"})

    return {
        "key": key,
        "id": q.qid,
        "status": "failed" if api_errors else "done",
        "final": final,
        "source": source,
        "answer": {
            "model": answer_model,
            "samples": [{k: s[k] for k in REPLY_FIELDS} if s else {"error": _error_of(api_errors, i)}
                        for i, s in enumerate(samples)],
            "votes": dict(Counter(letter for letter in letters if letter)),
            "letter": vote,
            "chosen": chosen,
        },
        "evaluate": None if evaluation is None else {"model": evaluate_model, **evaluation},
        "errors": problems,
    }


def with_fallback(record: dict[str, Any], fallback: str | None, letters: str) -> dict[str, Any]:
    """The trace record with the fallback letter as its final answer when no agent gave one
    (`source: fallback`); a letter the question does not offer becomes A. None: no answer."""
    if record["final"] is not None and record["source"] != "fallback":
        return record
    if fallback is None:
        return {**record, "final": None, "source": "none"}
    return {**record, "final": fallback if fallback in letters else "A", "source": "fallback"}


def fallback_letter(recipe: PipelineRecipe, stage: str = "infer") -> str | None:
    """`inference.fallback` as a letter: the training prior, a fixed letter, or None."""
    from orchestrator.fixes import fixes_path, prior_letter

    setting = recipe.inference.fallback
    if setting != "prior":
        return setting
    return prior_letter(project_root() / recipe.data.train, fixes_path(recipe.data), stage)


def _error_of(api_errors: list[dict], sample: int) -> str | None:
    return next((e["reason"] for e in api_errors if e["stage"] == "answer" and e.get("sample", 0) == sample), None)


def _reply_fields(reply: Any, q: Question) -> dict[str, Any]:
    return {"text": reply.text, "letter": extract_choice(reply.text, len(q.options)),
            "latency": round(reply.latency, 3), "attempts": reply.attempts, "finish_reason": reply.finish_reason}


# ---------------------------------------------------------------- endpoints


def _listed_model(url: str, api_key: str, role: str) -> str:
    """The one model an endpoint lists, when the user named none."""
    from orchestrator.endpoints import Endpoint, EndpointError

    async def ask() -> list[str]:
        async with Endpoint(url, "", api_key, max_retries=2) as endpoint:
            return await endpoint.models()

    try:
        ids = asyncio.run(ask())
    except EndpointError as e:
        raise StageFailed(f"the {role} endpoint {e}") from None
    if len(ids) != 1:
        raise UserError(f"the {role} endpoint {url} lists {len(ids)} models ({', '.join(ids)}): "
                        f"choose one with --{role}-model NAME")
    return ids[0]


def _agent(
    role: str, *, url: str | None, model: str | None, api_key_env: str | None, loaded: Loaded[RoleRecipe] | None
) -> Agent:
    """The endpoint at `url`, else the merged model of the role recipe `loaded`, to be served."""
    from orchestrator.endpoints import resolve_api_key
    from orchestrator.llamafactory import role_paths
    from orchestrator.serving import model_version

    if url:
        # no variable named: a keyless server (vLLM, llamafactory-cli api) on any host
        api_key = resolve_api_key(api_key_env, url) if api_key_env else "EMPTY"
        model = model or _listed_model(url, api_key, role)
        return Agent(role, model, model, api_key, url=url)
    if loaded is None:
        raise UserError(f"no {role} endpoint (--{role}-url) and no {role} recipe to serve (--{role}-recipe)")
    name = loaded.recipe.run_name
    version = model_version(role_paths(loaded.recipe))
    return Agent(role, model or name, f"{name}@{version}", "EMPTY", loaded=loaded)


@contextmanager
def _base_url(agent: Agent) -> Iterator[str]:
    """The agent's URL, serving its merged model on a free loopback port for the block if needed."""
    if agent.url:
        yield agent.url
        return
    from orchestrator.process import free_port
    from orchestrator.serving import served

    assert agent.loaded is not None  # an agent without a URL has a recipe (see _agent)
    with served(agent.loaded, free_port()) as serving:
        yield serving.url


# ---------------------------------------------------------------- the run


class _Run:
    def __init__(self, out_dir: Path, questions: list[Question], inference: InferenceSection, answer: Agent,
                 evaluate: Agent):
        self.out_dir, self.inf = out_dir, inference
        self.answer, self.evaluate = answer, evaluate
        self.temps = temperatures(inference)
        self.prompts = {q.qid: answer_prompt(q) for q in questions}
        self.keys = {q.qid: self._trace_key(q) for q in questions}
        self.requests = 0
        self.failures: list[str] = []
        self._bars: dict[str, Any] = {}

    def _trace_key(self, q: Question) -> str:
        return stable_key(
            qid=q.qid, answer_prompt=text_hash(self.prompts[q.qid]),
            evaluate_prompt=text_hash(evaluate_prompt(q, "")),
            answer_model=self.answer.identity, evaluate_model=self.evaluate.identity,
            sampling={"answer": self.temps, "evaluate": self.inf.temperature, "max_tokens": self.inf.max_tokens},
        )

    def sample_key(self, q: Question, i: int) -> str:
        return stable_key(qid=q.qid, prompt=text_hash(self.prompts[q.qid]), model=self.answer.identity,
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

    def needs_answer(self, q: Question) -> bool:
        return any(self.sample_key(q, i) not in self.samples for i in range(len(self.temps)))

    def _api_error(self, q: Question, stage: str, e: Any, sample: int | None = None) -> dict[str, Any]:
        error = {"id": q.qid, "stage": stage, "kind": "api", "reason": e.reason, "attempts": e.attempts,
                 "detail": e.detail, **({"sample": sample} if sample is not None and len(self.temps) > 1 else {})}
        self.live_errors.append(error)  # visible at once; errors.jsonl is rewritten at the end
        self.failures.append(f"{q.qid} ({stage}): {e.reason}")
        return error

    @asynccontextmanager
    async def _endpoint(self, agent: Agent, url: str | None):
        if url is None:
            yield None
            return
        from orchestrator.endpoints import Endpoint

        inf = self.inf
        async with Endpoint(url, agent.model, agent.api_key, concurrency=inf.concurrency,
                            timeout=inf.timeout, max_retries=inf.max_retries) as endpoint:
            try:
                yield endpoint
            finally:
                self.requests += endpoint.requests

    def _tick(self, stage: str) -> None:
        if stage in self._bars:
            self._bars[stage].update(1)

    @contextmanager
    def _progress(self, *stages: str, total: int) -> Iterator[None]:
        self._bars = {stage: bar(total, stage, "q") for stage in stages}
        try:
            yield
        finally:
            for b in self._bars.values():
                b.close()
            self._bars = {}

    async def stage1(self, q: Question, endpoint: Any) -> tuple[list[dict | None], list[dict]]:
        """The Answer samples of `q` (from stage1.jsonl when there) and the API failures."""
        from orchestrator.endpoints import EndpointError

        prompt = self.prompts[q.qid]

        async def sample(i: int) -> tuple[dict | None, dict | None]:
            key = self.sample_key(q, i)
            if key in self.samples:
                return self.samples.get(key), None
            try:
                reply = await endpoint.complete(prompt, temperature=self.temps[i], max_tokens=self.inf.max_tokens)
            except EndpointError as e:
                return None, self._api_error(q, "answer", e, i)
            record = {"key": key, "id": q.qid, "sample": i, **_reply_fields(reply, q)}
            self.samples.append(record)
            return record, None

        pairs = await asyncio.gather(*(sample(i) for i in range(len(self.temps))))
        self._tick("answer")
        return [s for s, _ in pairs], [e for _, e in pairs if e]

    async def stage2(self, q: Question, first: tuple[list[dict | None], list[dict]], endpoint: Any) -> None:
        """Ask the Evaluate Agent about the chosen Answer text; trace the question."""
        from orchestrator.endpoints import EndpointError

        samples, api_errors = first
        chosen = chosen_sample(samples)
        evaluation = None
        if chosen is not None:
            prompt = evaluate_prompt(q, samples[chosen]["text"])
            try:
                reply = await endpoint.complete(
                    prompt, temperature=self.inf.temperature, max_tokens=self.inf.max_tokens
                )
                evaluation = _reply_fields(reply, q)
            except EndpointError as e:
                api_errors = [*api_errors, self._api_error(q, "evaluate", e)]
                evaluation = {"error": e.reason}
        self.trace.append(trace_record(q, self.keys[q.qid], samples, api_errors, evaluation,
                                       self.answer.model, self.evaluate.model))
        self._tick("evaluate")

    async def pipelined(self, todo: list[Question], answer_url: str | None, evaluate_url: str | None) -> None:
        """Each question goes to stage 2 as soon as its stage 1 ends."""
        async with self._endpoint(self.answer, answer_url) as a, self._endpoint(self.evaluate, evaluate_url) as e:
            async def one(q: Question) -> None:
                await self.stage2(q, await self.stage1(q, a), e)

            with self._progress("answer", "evaluate", total=len(todo)):
                await asyncio.gather(*(one(q) for q in todo))

    async def staged_answer(self, todo: list[Question], url: str | None) -> dict[str, tuple]:
        async with self._endpoint(self.answer, url) as a:
            with self._progress("answer", total=len(todo)):
                results = await asyncio.gather(*(self.stage1(q, a) for q in todo))
        return {q.qid: r for q, r in zip(todo, results, strict=True)}

    async def staged_evaluate(self, todo: list[Question], first: dict[str, tuple], url: str | None) -> None:
        async with self._endpoint(self.evaluate, url) as e:
            with self._progress("evaluate", total=len(todo)):
                await asyncio.gather(*(self.stage2(q, first[q.qid], e) for q in todo))

    def execute(self, todo: list[Question]) -> None:
        """Serve or reach what is needed (no Answer model when stage 1 is all cached), then ask."""
        need_answer = any(self.needs_answer(q) for q in todo)
        if self.inf.mode == "pipelined":
            with _base_url(self.answer) if need_answer else nullcontext() as a, _base_url(self.evaluate) as e:
                asyncio.run(self.pipelined(todo, a, e))
            return
        with _base_url(self.answer) if need_answer else nullcontext() as url:
            first = asyncio.run(self.staged_answer(todo, url))
        any_text = any(chosen_sample(samples) is not None for samples, _ in first.values())
        with _base_url(self.evaluate) if any_text else nullcontext() as url:  # no text: only trace failures
            asyncio.run(self.staged_evaluate(todo, first, url))


def _compact_trace(path: Path, current: list[dict[str, Any]]) -> None:
    """Rewrite the trace with one line per question: this run's records in input order, then
    the latest record of any other question an earlier run traced."""
    ours = {r["id"] for r in current}
    others: dict[str, dict] = {}
    for record in read_records(path):
        if record.get("id") not in ours:
            others[record.get("id")] = record
    atomic_write_jsonl(path, [*current, *others.values()])


def infer(
    *,
    pipeline: Loaded[PipelineRecipe],
    input_path: str | Path,
    out_dir: str | Path,
    answer: Loaded[RoleRecipe] | None = None,
    evaluate: Loaded[RoleRecipe] | None = None,
    limit: int | None = None,
    skip_invalid: bool = False,
) -> InferSummary:
    """Answer every question of `input_path` (the first `limit` problems) into `out_dir`, with
    the pipeline recipe's `inference:` settings (flags folded in). A role without a URL there
    is served from its role recipe `answer` / `evaluate`."""
    inf = pipeline.recipe.inference
    dataset = read_reporting(input_path, "infer", skip_invalid)
    dataset = Dataset(dataset.path, dataset.problems[:limit])
    questions = dataset.questions
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out-dir {out} is a file, not a directory")
    answer_agent = _agent("answer", url=inf.answer_url, model=inf.answer_model, api_key_env=inf.api_key_env,
                          loaded=answer)
    evaluate_agent = _agent("evaluate", url=inf.evaluate_url, model=inf.evaluate_model,
                            api_key_env=inf.api_key_env, loaded=evaluate)
    for line in pipeline.overridden_lines() + [f"{a.role}: {line}" for a in (answer_agent, evaluate_agent)
                                              for line in (a.loaded.overridden_lines() if a.loaded else [])]:
        say("infer", line)
    # the run record: what this run was given besides the recipe files
    atomic_write_json(out / "run.json", {
        "pipeline": str(pipeline.path), "overrides": pipeline.overridden(),
        **{a.role: {"agent": a.describe(), "overrides": a.loaded.overridden() if a.loaded else {}}
           for a in (answer_agent, evaluate_agent)},
    })
    fallback = fallback_letter(pipeline.recipe)

    started = time.monotonic()
    run = _Run(out, questions, inf, answer_agent, evaluate_agent)
    with run.ledgers():
        todo = [q for q in questions if not run.is_done(q)]
        say("infer", f"{len(questions)} questions, {len(questions) - len(todo)} already done; mode {inf.mode}, "
                     f"votes {inf.votes}; answer: {answer_agent.describe()}; evaluate: {evaluate_agent.describe()}")
        if todo:
            run.execute(todo)
        records = [with_fallback(run.trace.get(run.keys[q.qid]), fallback, q.letters) for q in questions]
    _compact_trace(out / "trace.jsonl", records)
    atomic_write_jsonl(out / "errors.jsonl", [e for r in records for e in r["errors"]])
    write_submission(out / "submission.jsonl", dataset, {r["id"]: r["final"] for r in records})

    summary = InferSummary(out, questions=len(questions), resumed=len(questions) - len(todo),
                           requests=run.requests, seconds=time.monotonic() - started, failures=run.failures)
    for r in records:
        summary.answered += r["final"] is not None
        summary.failed += r["status"] == "failed"
        summary.sources[r["source"]] += 1
        summary.errors.update(e["kind"] for e in r["errors"])
    return summary
