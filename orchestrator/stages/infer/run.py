"""`infer()`: read the input, record what answers it (run.json), let the scheduler ask what is
not done yet, then write the trace, the errors and the submission, and count them."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_jsonl
from orchestrator.core.common.paths import project_relative
from orchestrator.core.common.ledger import read_records
from orchestrator.core.common.progress import say
from orchestrator.core.run_folders.records import RunRecord, write_record
from orchestrator.core.data.competition import Dataset, read_reporting, write_submission
from orchestrator.core.data.fallback import fallback_letter
from orchestrator.core.data.fewshot import Fewshot, examples_for
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import PipelineRecipe, RoleRecipe
from orchestrator.core.run_folders.locks import run_lock
from orchestrator.core.run_folders.trace import TraceRecord
from orchestrator.core.serving.agents import Agent, make_agent
from orchestrator.stages.infer.deadline import Clock, Deadline
from orchestrator.stages.infer.scheduler import Scheduler
from orchestrator.stages.infer.servers import make_answer_agents, share_servers
from orchestrator.stages.infer.summary import InferSummary
from orchestrator.stages.infer.votes import with_fallback
from orchestrator.core.run_folders.role_paths import role_paths
from orchestrator.core.run_folders.trained import read_manifest


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
            record |= {"manifest": project_relative(paths.manifest), "recipe": trained.recipe, "trained": trained.started,
                       "split": trained.split()}
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
    clock: Clock | None = None,
) -> InferSummary:
    """Answer every question of `input_path` (the first `limit` problems) into `out_dir`, with
    the pipeline recipe's `inference:` settings (flags folded in). A model without a URL there
    is served from its role recipe: `answers[i]` for the i-th of `inference.answer_models` (or
    `answer` for the one Answer model), `evaluate`. An Answer model at an endpoint is asked the
    prompts of `endpoint_recipe`'s fewshot setting (inference.answer_recipe: what it was trained on).
    `clock`: what inference.deadline_s is read on (default: the real one)."""
    started = time.monotonic()
    inf = pipeline.recipe.inference
    deadline = Deadline.after(inf.deadline_s, clock)  # inference.deadline_s counts from here
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
    plan = share_servers(answer_agents, evaluate_agent)
    mode = "pipelined on one vLLM server" if plan.everyone else inf.mode
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
    write_record(out, RunRecord(
        pipeline=project_relative(pipeline.path), overrides=pipeline.overridden(),
        answer=given(answer_agents[0]), evaluate=given(evaluate_agent),
        answers=[{"label": a.label, **given(a)} for a in answer_agents] if several else None,
        # for `compare`: the input, the settings in effect and each model (a served one's recipe and split)
        input=project_relative(dataset.path), limit=limit, inference=inf.model_dump(),
        fewshot={label: f.record() for label, f in shots.items()},
        models={**{"answer" if not several else f"answer.{a.label}": _agent_record(a) for a in answer_agents},
                "evaluate": _agent_record(evaluate_agent)},
    ))
    if pipeline.recipe.inference.fallback == "prior":
        say("infer", pipeline.data_line("data.train"))
    fallback = fallback_letter(pipeline.recipe)

    run = Scheduler(out, questions, inf, answer_agents, evaluate_agent, shots, plan=plan, deadline=deadline)
    writing = threading.Lock()  # the deadline's write and the last one
    last_written = threading.Event()

    def write(records: list[TraceRecord], last: bool = False) -> None:
        with writing:
            if last_written.is_set():  # the deadline's write, come after the last one: that one stands
                return
            write_submission(out / "submission.jsonl", dataset, {r.id: r.final for r in records})
            if last:
                last_written.set()

    def at_deadline() -> None:  # on the alarm's thread: the ledgers are only read
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
        if todo:
            deadline.start(at_deadline)
        try:
            if todo:
                run.execute(todo)
        except BaseException:
            deadline.stop()
            raise
        for line in run.sampling_lines():
            say("infer", line)
        # every question is traced now: done by an earlier run or by this one (failed or not)
        records = [with_fallback(run.traced(q), fallback, q.letters) for q in questions]
    _compact_trace(out / "trace.jsonl", records)
    atomic_write_jsonl(out / "errors.jsonl", [e.line() for r in records for e in r.errors])
    write(records, last=True)
    deadline.stop()  # only now: until the last write, the deadline's is the one in time

    summary = InferSummary(out, questions=len(questions), resumed=len(questions) - len(todo), stale=stale,
                           requests=run.requests, seconds=time.monotonic() - started, failures=run.failures,
                           rounds=list(zip(run.round_questions, run.round_requests, strict=True)), extra=extra)
    summary.count(records)
    return summary
