"""Stage: distil worked solutions from a teacher LLM over the OpenAI API.

Every reply is appended to runs/distill/teacher.jsonl the moment it arrives, keyed by what
determines it, so a re-run asks nothing twice and a crash loses at most the requests in
flight. With `max_attempts > 1` a question whose reply misses the gold letter is asked again
at `retry_temperature` (rejection sampling); a question that ends rejected is cached as such.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.common.api_keys import resolve_api_key
from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_json, atomic_write_jsonl
from orchestrator.core.common.ledger import Ledger, read_records, text_hash
from orchestrator.core.common.paths import project_root, runs_dir
from orchestrator.core.common.progress import bar, say
from orchestrator.core.data.answers import extract_choice
from orchestrator.core.data.competition import Question
from orchestrator.core.data.fewshot import examples_for
from orchestrator.core.data.prompts import Example
from orchestrator.core.data.sources import training_sources
from orchestrator.core.data.teacher_cache import (
    IDENTITY,
    cache_path,
    cached_reply,
    sampling_of,
    settings_path,
    teacher_key,
    teacher_prompt,
)
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import PipelineRecipe, RoleRecipe, TeacherSection
from orchestrator.core.run_folders.locks import run_lock
from orchestrator.core.serving.endpoints import Endpoint, EndpointError


OTHER_TEACHER = ("or point at another teacher: teacher.base_url in your pipeline recipe, `--teacher-url URL` "
                 "(with --teacher-model), or `make TEACHER_URL=URL TEACHER_MODEL=NAME TEACHER_KEY_ENV=VAR`")


def errors_path() -> Path:
    return runs_dir() / "distill" / "errors.jsonl"


def is_settled(record: dict[str, Any] | None, teacher: TeacherSection) -> bool:
    """Nothing more to ask: an accepted reply, or rejected after every allowed attempt."""
    if record is None:
        return False
    return record.get("status") == "ok" or record.get("attempts", 0) >= teacher.max_attempts


@dataclass
class DistillSummary:
    questions: int = 0
    cached: int = 0
    asked: int = 0
    agreeing_first: int = 0
    agreeing_after_retries: int = 0
    rejected: int = 0
    no_gold: int = 0
    failed: int = 0
    failing: int = 0  # questions still failing at the end (errors.jsonl)
    allowed: int = 0  # of them, how many teacher.max_failed lets distill finish with
    full_run: tuple[int, int] | None = None  # with --limit: (questions, problems) a full run would still ask
    requests: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    sources: list[tuple[str, str, int]] = field(default_factory=list)  # (file, kind, questions)
    fewshot: list[str] = field(default_factory=list)  # one line per few-shot pass

    def table(self) -> str:
        several = len(self.sources) > 1
        rows = [
            ("questions", self.questions),
            *[(f"  from {file} ({kind})", n) for file, kind, n in self.sources if several],
            *[(f"  {line}", "") for line in self.fewshot],
            ("already cached", self.cached),
            ("asked now", self.asked),
            ("agreeing at first try", self.agreeing_first),
            ("agreeing after retries", self.agreeing_after_retries),
            ("rejected (teacher never reached the gold letter)", self.rejected),
            ("no gold to compare", self.no_gold),
            ("failed (in errors.jsonl, asked again next run)", self.failed),
            ("requests sent", self.requests),
            ("requests per second", f"{self.requests / self.seconds:.1f}" if self.seconds else "-"),
            *([("a full run (no --limit) would ask", self.full_run_text())] if self.full_run else []),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

    def full_run_text(self) -> str:
        assert self.full_run is not None
        questions, passes = self.full_run
        return (f"{questions} more questions: {questions * passes} requests or more"
                + (f" ({passes} prompts a question: fewshot)" if passes > 1 else ""))


def _import_preloaded(cache: Ledger, files: list[str]) -> int:
    """Copy the records of read-only cache files (e.g. the sample's worked solutions) in."""
    added = 0
    for name in files:
        path = project_root() / name
        if not path.exists():
            raise UserError(f"teacher.preload: {name} does not exist")
        for record in read_records(path):
            if isinstance(record.get("key"), str) and record["key"] not in cache:
                cache.append(record)
                added += 1
    return added


def _count(summary: DistillSummary, record: dict[str, Any]) -> None:
    if record.get("agrees") is None:
        summary.no_gold += 1
    elif record["status"] == "rejected":
        summary.rejected += 1
    elif record.get("attempts", 1) > 1:
        summary.agreeing_after_retries += 1
    else:
        summary.agreeing_first += 1


async def _ask(q: Question, teacher: TeacherSection, endpoint: Endpoint, cache: Ledger,
               examples: Sequence[Example] = ()) -> dict[str, Any]:
    """Ask until the reply reaches the gold letter or attempts run out; cache the outcome."""
    prompt = teacher_prompt(q, teacher, examples)
    sampling = sampling_of(teacher)
    key = teacher_key(q.qid, prompt, teacher.model, sampling)
    previous = cache.get(key)
    record = previous or {
        "key": key, "qid": q.qid, "model": teacher.model, "sampling": sampling,
        "prompt_sha": text_hash(prompt), "status": "rejected", "text": None, "letter": None,
        "gold": q.answer, "agrees": None, "attempts": 0, "source": "teacher",
    }
    record = dict(record)
    start_attempts = record["attempts"]
    while record["attempts"] < teacher.max_attempts:
        temperature = teacher.temperature if record["attempts"] == 0 else teacher.retry_temperature
        try:
            reply = await endpoint.complete(prompt, temperature=temperature, max_tokens=teacher.max_tokens)
        except EndpointError:
            if record["attempts"] > start_attempts:
                cache.append(record)  # keep the replies already paid for
            raise
        letter = extract_choice(reply.text, len(q.options))
        agrees = None if q.answer is None else letter == q.answer
        record["attempts"] += 1
        if record["text"] is None or agrees or record["agrees"] is None:
            record.update(text=reply.text, letter=letter, agrees=agrees, latency=round(reply.latency, 3))
        if agrees is not False:
            record["status"] = "ok"
            break
    cache.append(record)
    return record


def distill(**kwargs: Any) -> DistillSummary:
    """`_distill` holding the lock of runs/distill/: one distillation at a time."""
    with run_lock(runs_dir() / "distill", "orchestrator distill"):
        return _distill(**kwargs)


def _distill(
    *,
    pipeline: Loaded[PipelineRecipe],
    input_path: str | Path | None = None,
    limit: int | None = None,
    echo: bool = True,
    skip_invalid: bool = False,
    answers: Sequence[RoleRecipe] = (),
) -> DistillSummary:
    """Ask the teacher of `pipeline` (its flags folded in) about every question of `input_path`
    (default: data.train), the first `limit` only when given. For each of `answers` (Answer
    recipes) with `fewshot.k > 0`, a second pass asks the prompts with their worked examples,
    which come from the first pass's replies: what the dataset trains on and infer asks."""
    recipe = pipeline.recipe
    teacher = recipe.teacher
    if input_path is None:
        pipeline.data_file("data.train")
        if echo:
            say("distill", pipeline.data_line("data.train"))
    sources = training_sources(recipe.data, input_path, "distill", skip_invalid)
    questions = everything = [q for s in sources for q in s.questions]
    if limit is not None:  # the first `limit` problems, as `infer --limit` counts
        problems = list(dict.fromkeys(q.problem_id for q in questions))
        first = set(problems[:limit])
        questions = [q for q in questions if q.problem_id in first]
        if echo:
            say("distill", f"--limit {limit}: the first {len(first)} of {len(problems)} training problems "
                           f"({len(questions)} of {len(everything)} questions)")
    if echo:
        for line in pipeline.overridden_lines():
            say("distill", line)
    summary = DistillSummary(questions=len(questions))
    taken = {q.qid for q in questions}
    summary.sources = [(s.file, s.kind, sum(q.qid in taken for q in s.questions)) for s in sources]
    started = time.monotonic()
    shot_roles = list({r.fewshot: r for r in answers if r.role == "answer" and r.fewshot.k > 0}.values())
    passes: list[dict[str, tuple]] = [{}]
    records: dict[tuple[str, int], dict[str, Any] | None] = {}
    with Ledger(errors_path(), key_field="qid") as errors:
        for n in range(1 + len(shot_roles)):
            if n:  # the examples come from the replies of the first pass
                shots = examples_for(questions, recipe, shot_roles[n - 1], teacher)
                passes.append(shots.examples)
                summary.fewshot.append(f"fewshot.k={shots.setting.k}: {len(questions)} prompts with examples "
                                       f"from a pool of {shots.pool}")
            examples = passes[n]
            with Ledger(cache_path()) as cache:
                if n == 0:
                    _import_preloaded(cache, teacher.preload)
                todo = []
                for q in questions:
                    record = cached_reply(cache, q, teacher, examples.get(q.qid, ()))
                    if record is not None and is_settled(record, teacher):
                        summary.cached += 1
                        _count(summary, record)
                    else:
                        todo.append(q)
                if todo:
                    asyncio.run(_ask_all(todo, teacher, examples, cache, errors, summary, bar if echo else None))
                records |= {(q.qid, n): cached_reply(cache, q, teacher, examples.get(q.qid, ())) for q in questions}
                if n == 0 and limit is not None:  # what the trial left for a full run
                    left = sum(not is_settled(cached_reply(cache, q, teacher), teacher) for q in everything)
                    summary.full_run = (left, 1 + len(shot_roles))
        # errors.jsonl lists what is still failing, nothing else
        failing = {qid for (qid, _), record in records.items() if not is_settled(record, teacher)}
        if any(records.values()):  # a run that got nothing changes nothing
            atomic_write_json(settings_path(), {**{k: getattr(teacher, k) for k in IDENTITY},
                                                "overrides": pipeline.overridden()})
        atomic_write_jsonl(errors_path(), [r for qid, r in errors.records.items() if qid in failing])
    summary.failing = len(failing)
    summary.allowed = teacher.failures_allowed(len(questions))
    summary.seconds = time.monotonic() - started
    return summary


async def _ask_all(todo: list[Question], teacher: TeacherSection, examples: dict[str, tuple], cache: Ledger,
                   errors: Ledger, summary: DistillSummary, make_bar) -> None:
    try:
        api_key = resolve_api_key(teacher.api_key_env, teacher.base_url)
    except UserError as e:
        raise UserError(*e.lines[:-1], f"{e.lines[-1]}; {OTHER_TEACHER}") from None
    progress = make_bar(len(todo), "distill", "q") if make_bar else None
    started = time.monotonic()
    async with Endpoint(
        teacher.base_url, teacher.model, api_key, concurrency=teacher.concurrency,
        timeout=teacher.timeout, max_retries=teacher.max_retries,
    ) as endpoint:
        async def one(q: Question) -> None:
            try:
                record = await _ask(q, teacher, endpoint, cache, examples.get(q.qid, ()))
                summary.asked += 1
                _count(summary, record)
            except EndpointError as e:
                summary.failed += 1
                summary.failures.append(f"{q.qid}: {e.reason}")
                errors.append({"qid": q.qid, "reason": e.reason, "attempts": e.attempts, "detail": e.detail})
            if progress is not None:
                elapsed = max(time.monotonic() - started, 1e-9)
                progress.set_postfix(cached=summary.cached, failed=summary.failed,
                                     rps=f"{endpoint.requests / elapsed:.1f}", refresh=False)
                progress.update(1)

        try:
            await asyncio.gather(*(one(q) for q in todo))
        finally:
            summary.requests = endpoint.requests
            if progress is not None:
                progress.close()
