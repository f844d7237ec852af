"""infer's deadline (inference.deadline_s) and a served model whose server dies mid-run: the run
always ends with a complete submission, written before the deadline, every question answered by
the Evaluate letter, else the Answer majority, else the fallback; what was not asked is asked
by the next run. The deadline's clock is one the test moves (no margin depends on the machine's
speed), except in one run end to end on the real clock, against a stand-in vllm that will not
stop; a dying stand-in vllm too."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, default_reply
from helpers import REPO, adapter_variant, read_jsonl, row, write_competition

from orchestrator.core.data.competition import read_dataset
from orchestrator.stages.infer import Deadline, deadline_margin
from orchestrator.stages.infer.deadline import NotAsked

SHAPE = [[4, 3], [4, 4, 2], [3, 3], [4], [2, 2]]  # 10 questions


class HandClock:
    """A clock the test moves (`to`); the deadline's alarm rings on the thread that moves it past."""

    def __init__(self) -> None:
        self.t, self.alarms, self.lock = 0.0, [], threading.Lock()

    def now(self) -> float:
        return self.t

    def alarm(self, at, ring):
        entry = (at, ring)
        with self.lock:
            self.alarms.append(entry)

        def cancel() -> None:
            with self.lock:
                if entry in self.alarms:
                    self.alarms.remove(entry)

        return cancel

    def to(self, t: float) -> None:
        with self.lock:
            self.t = t
            due = [e for e in self.alarms if e[0] <= t]
            for e in due:
                self.alarms.remove(e)
        for _, ring in due:
            ring()


# ---------------------------------------------------------------- the guard on its own


@pytest.mark.parametrize("deadline_s, margin", [(1.0, 0.1), (3.0, 0.3), (20.0, 2.0), (3600.0, 2.0)])
def test_asking_stops_a_tenth_of_the_deadline_before_it_at_most_two_seconds(deadline_s, margin):
    clock = HandClock()
    clock.to(100.0)
    deadline = Deadline.after(deadline_s, clock)
    assert deadline_margin(deadline_s) == pytest.approx(margin)
    assert deadline.left() == pytest.approx(deadline_s - margin) and not deadline.expired()
    clock.to(100.0 + deadline_s - margin - 0.01)
    assert not deadline.expired()
    clock.to(100.0 + deadline_s - margin + 0.01)
    assert deadline.expired()
    assert Deadline.after(None, clock).left() is None and not Deadline.after(None, clock).expired()


def test_the_alarm_rings_once_when_the_clock_passes_and_not_once_stopped():
    clock, rang = HandClock(), []
    deadline = Deadline.after(10.0, clock)
    deadline.start(lambda: rang.append(clock.now()))
    clock.to(5.0)
    assert rang == []
    clock.to(9.5), clock.to(9.8)
    assert rang == [9.5]
    stopped = Deadline.after(10.0, clock)
    stopped.start(lambda: rang.append("stopped"))
    stopped.stop()
    clock.to(100.0)
    assert rang == [9.5]


@pytest.mark.parametrize("passes_first", [False, True], ids=["reply-first", "deadline-first"])
def test_a_reply_is_given_up_when_the_deadline_passes_before_it(passes_first):
    """`within`: the reply if it comes first; NotAsked("deadline") the moment the clock passes
    (moved from another thread, as a timer's alarm rings), the awaited call cancelled."""
    clock = HandClock()
    deadline = Deadline.after(10.0, clock)
    deadline.start()

    async def go():
        reply, cancelled = asyncio.Event(), []

        async def call():
            try:
                await reply.wait()
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
            return "reply"

        loop = asyncio.get_running_loop()
        mover = threading.Thread(target=clock.to, args=(9.9,)) if passes_first else None
        if mover:
            loop.call_later(0.01, mover.start)
        else:
            loop.call_later(0.01, reply.set)
        try:
            return await deadline.within(call())
        except NotAsked as e:
            return e.reason, cancelled

    assert asyncio.run(asyncio.wait_for(go(), 30)) == (("deadline", [True]) if passes_first else "reply")


# ---------------------------------------------------------------- a run cut by the deadline


class CutAt:
    """Both servers' reply: the first `replies` come at once; the next request moves the clock
    past the point where asking stops (its alarm writes the submission there, on this thread)
    and is held, as is every later one, until `release` (then all are answered at once)."""

    def __init__(self, clock: HandClock, to: float, replies: int, submission: Path):
        self.clock, self.moved_to, self.replies, self.submission = clock, to, replies, submission
        self.count, self.late, self.held = 0, 0, 0
        self.lock, self.release = threading.Lock(), threading.Event()
        self.at_deadline: list | None = None  # the submission's answers when the clock passed

    def __call__(self, prompt: str, request: dict) -> str:
        if self.release.is_set():
            return default_reply(prompt, request)
        with self.lock:
            self.count += 1
            if self.count == self.replies + 1:
                self.clock.to(self.moved_to)
                self.at_deadline = [q.answer for q in read_dataset(self.submission).questions]
            elif self.count > self.replies + 1:
                self.late += 1  # sent before the clock passed: it held a slot then
            held = self.count > self.replies
            self.held += held
        if held:
            self.release.wait(60)
            with self.lock:
                self.held -= 1
        return default_reply(prompt, request)


def _infer(test: Path, out: Path, a: FakeOpenAI, e: FakeOpenAI, *sets: str, clock=None):
    """The infer stage itself, on the test's clock."""
    from orchestrator.core.recipes.loading import load_pipeline
    from orchestrator.core.serving.inference_models import resolve_models
    from orchestrator.stages.infer import infer

    models = resolve_models(load_pipeline(None, sets), (), answer_urls=[a.url], answer_names=["ans"],
                            flags={"inference.evaluate_url": ("--evaluate-url", e.url),
                                   "inference.evaluate_model": ("--evaluate-model", "ev")})
    return infer(pipeline=models.pipeline, input_path=test, out_dir=out, answers=models.answers,
                 evaluate=models.evaluate, clock=clock)


@pytest.mark.parametrize("mode", ["staged", "pipelined"])
def test_a_deadline_shorter_than_the_run_still_leaves_a_complete_submission_in_time(project, cli, capsys, mode):
    qids = write_competition(project / "test.jsonl", SHAPE)
    deadline = 3.0  # asking stops at 2.7 on the test's clock: the fifth request moves it to 2.9
    sets = (f"inference.mode={mode}", "inference.concurrency=2", "inference.fallback=D")
    clock = HandClock()
    cut = CutAt(clock, 2.9, 4, project / "out" / "submission.jsonl")
    try:
        with FakeOpenAI(models=("ans",), reply=cut) as a, FakeOpenAI(models=("ev",), reply=cut) as e:
            summary = _infer(project / "test.jsonl", project / "out", a, e, *sets,
                             f"inference.deadline_s={deadline}", clock=clock)
            # the run ended without the replies still awaited at the deadline
            assert cut.held > 0 and clock.now() == 2.9
            cut.release.set()
            err = capsys.readouterr().err
            out = summary.table()
            asked = a.completions + e.completions
            assert asked < 2 * len(qids)  # the run was cut
            # no request was sent once the clock had passed, but those holding one of the 2 x 2 slots then
            assert cut.late <= 3

            # written when the clock passed, complete: every question has a letter
            assert cut.at_deadline is not None and len(cut.at_deadline) == len(qids), err
            assert all(x in "ABCDEFG" for x in cut.at_deadline), err
            assert "deadline: " in err and "asking stops" in err
            trace = read_jsonl(project / "out" / "trace.jsonl")
            assert [r["id"] for r in trace] == qids
            final = {q.qid: q.answer for q in read_dataset(project / "out" / "submission.jsonl").questions}
            assert final == {r["id"]: r["final"] for r in trace} and all(final.values())
            sources = Counter(r["source"] for r in trace)
            assert set(sources) <= {"evaluate", "answer_fallback", "fallback"} and sources["fallback"] > 0
            assert all(r["final"] in ("D", "A") for r in trace if r["source"] == "fallback")  # A: D not offered
            cut_short = [r for r in trace if any(p["kind"] == "not_asked" for p in r["errors"])]
            assert cut_short and all(r["status"] == "failed" for r in cut_short)
            assert {p["reason"] for r in cut_short for p in r["errors"] if p["kind"] == "not_asked"} == {"deadline"}
            # the summary counts each source and the questions cut
            assert int(row(out, "answered")) == len(qids)
            assert int(row(out, "  by the Evaluate Agent")) == sources["evaluate"]
            assert int(row(out, "  Answer letter fallback")) == sources["answer_fallback"]
            assert int(row(out, "  fallback letter (no answer read)")) == sources["fallback"]
            assert int(row(out, "not asked: deadline or server gone (asked again next run)")) == len(cut_short)

            # no deadline now: only what was cut is asked, and everything is done
            answered = sum(r["answer"]["samples"][0]["text"] is not None for r in trace)
            a.reset_counts(), e.reset_counts()
            code, out, err = cli("infer", project / "test.jsonl", "--out-dir", project / "out", "--answer-url", a.url,
                                 "--evaluate-url", e.url, "--answer-model", "ans", "--evaluate-model", "ev",
                                 *[x for s in sets for x in ("--set", s)])
            assert code == 0, err
            trace = read_jsonl(project / "out" / "trace.jsonl")
            assert all(r["status"] == "done" and r["source"] == "evaluate" for r in trace)
            # nothing answered before is asked again
            assert (a.completions, e.completions) == (len(qids) - answered, len(qids) - sources["evaluate"])
    finally:
        cut.release.set()


class FirstWrite(threading.Thread):
    """Notes when `path` first holds a submission that reads (its answers then)."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.at, self.answers, self.stop = path, None, None, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.at is None:
            if self.path.exists():
                seen = time.monotonic()
                try:
                    self.answers = [q.answer for q in read_dataset(self.path).questions]
                except Exception as e:
                    self.answers = [repr(e)]
                self.at = seen
            time.sleep(0.02)


# A stand-in `vllm serve` (one server for the Answer and Evaluate adapters): each reply takes
# `latency` s; after `answers` replies it dies (its process exits); with `stubborn` it ignores
# SIGTERM, so stopping it takes the whole grace period.
STAND_IN = """#!{python}
import os, signal, sys, threading
sys.path.insert(0, {tests!r})
from fake_openai import FakeOpenAI
if {stubborn}:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
start = args.index("--lora-modules") + 1
names = [m.split("=")[0] for m in args[start:] if "=" in m and not m.startswith("--")]
count, lock = [0], threading.Lock()
def reply(prompt, request):
    with lock:
        count[0] += 1
        if count[0] > {answers}:
            os._exit(3)
    return "### 可能的结果:\\n答案是：B"
FakeOpenAI(port=port, models=names, reply=reply, latency={latency}).start()
threading.Event().wait()
"""


def _stand_in(project: Path, monkeypatch, *, answers: int = 10**6, latency: float = 0.0, stubborn: bool = False):
    """The stand-in as vLLM's python ($ORCHESTRATOR_VLLM_PYTHON), and one Answer and one Evaluate
    adapter of the tiny base."""
    bin_dir = project / "bin"
    bin_dir.mkdir()
    script = bin_dir / "vllm-python"
    script.write_text(STAND_IN.format(python=sys.executable, tests=str(REPO / "tests"), answers=answers,
                                      latency=latency, stubborn=stubborn), encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("ORCHESTRATOR_VLLM_PYTHON", str(script))
    adapter_variant(project, "one-a", 8, serve={"weights": "adapter"})
    adapter_variant(project, "one-ev", 8, extends="tiny-evaluate.yaml", serve={"weights": "adapter"})
    return ("infer", project / "test.jsonl", "--out-dir", project / "out", "--answer-recipe", "recipes/one-a.yaml",
            "--evaluate-recipe", "recipes/one-ev.yaml", "--set", "inference.concurrency=2")


def test_the_deadline_write_does_not_wait_for_a_server_to_stop(tiny_project, cli, monkeypatch):
    """End to end on the real clock: the submission is written before the deadline while the run
    still waits for its server to stop (this one ignores SIGTERM: 10 s of grace)."""
    project = tiny_project  # the adapters are served on the tiny base, which must be there
    write_competition(project / "test.jsonl", SHAPE)
    args = _stand_in(project, monkeypatch, latency=2.0, stubborn=True)
    watch = FirstWrite(project / "out" / "submission.jsonl")
    watch.start()
    # asking stops 1 s before it (a generous margin); the stand-in starts in about a second, and
    # 20 replies at 2 in flight take 20 s
    deadline = 10.0
    started = time.monotonic()
    code, out, err = cli(*args, "--set", f"inference.deadline_s={deadline}")
    ended = time.monotonic()
    watch.stop.set()
    assert code == 0, err
    assert watch.at is not None and watch.at - started < deadline < ended - started, err
    assert len(watch.answers) == sum(map(len, SHAPE)) and all(x in "ABCDEFG" for x in watch.answers)
    assert "deadline: " in err and "asking stops" in err
    assert [q.answer for q in read_dataset(project / "out" / "submission.jsonl").questions] == watch.answers


def test_a_served_model_whose_server_dies_mid_run_ends_with_a_complete_submission(tiny_project, cli, monkeypatch):
    """One vLLM server for the Answer and Evaluate adapters; it dies after 6 replies: the run
    ends (no request waits on a dead server), every question has a letter, the rest is asked again."""
    project = tiny_project  # the adapters are served on the tiny base, which must be there
    args = _stand_in(project, monkeypatch, answers=6)
    qids = write_competition(project / "test.jsonl", SHAPE)
    code, out, err = cli(*args, "--set", "inference.max_retries=1", "--set", "inference.fallback=C")
    assert code == 1 and "Traceback" not in err  # requests failed: said once, asked again next run
    trace = read_jsonl(project / "out" / "trace.jsonl")
    assert [r["id"] for r in trace] == qids
    final = {q.qid: q.answer for q in read_dataset(project / "out" / "submission.jsonl").questions}
    assert all(final[qid] in "ABCDEFG" for qid in qids)
    reasons = Counter(p["reason"] for r in trace for p in r["errors"] if p["kind"] == "not_asked")
    assert reasons["server gone"] > 0  # once its port refused, nothing more was sent to it
    assert int(row(out, "not asked: deadline or server gone (asked again next run)")) > 0
    assert {r["source"] for r in trace} <= {"evaluate", "answer_fallback", "fallback"}
    assert any(r["source"] == "fallback" and r["final"] == "C" for r in trace)
    assert json.loads((project / "out" / "run.json").read_text())["inference"]["deadline_s"] is None
