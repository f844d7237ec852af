"""infer's deadline (inference.deadline_s) and a served model whose server dies mid-run: the run
always ends with a complete submission, written before the deadline, every question answered by
the Evaluate letter, else the Answer majority, else the fallback; what was not asked is asked
by the next run. Against slow loopback servers (fake_openai latency) and a dying stand-in vllm."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from helpers import REPO, adapter_variant, read_jsonl, write_competition

from orchestrator.core.data.competition import read_dataset

SHAPE = [[4, 3], [4, 4, 2], [3, 3], [4], [2, 2]]  # 10 questions


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


def row(table: str, name: str) -> str:
    return next(line[len(name):].strip() for line in table.splitlines() if line.startswith(name + "  "))


def _infer(test: Path, out: Path, a: FakeOpenAI, e: FakeOpenAI, *sets: str):
    """The infer stage itself, so the deadline's clock (which starts when it is called) is the test's."""
    from orchestrator.core.recipes.loading import load_pipeline
    from orchestrator.core.serving.inference_models import resolve_models
    from orchestrator.stages.infer import infer

    models = resolve_models(load_pipeline(None, sets), (), answer_urls=[a.url], answer_names=["ans"],
                            flags={"inference.evaluate_url": ("--evaluate-url", e.url),
                                   "inference.evaluate_model": ("--evaluate-model", "ev")})
    started = time.monotonic()
    summary = infer(pipeline=models.pipeline, input_path=test, out_dir=out, answers=models.answers,
                    evaluate=models.evaluate)
    return started, summary


@pytest.mark.parametrize("mode", ["staged", "pipelined"])
def test_a_deadline_shorter_than_the_run_still_leaves_a_complete_submission_in_time(project, cli, capsys, mode):
    qids = write_competition(project / "test.jsonl", SHAPE)
    deadline = 3.0  # 20 requests at 2 in flight and 1 s each take 10 s
    sets = (f"inference.mode={mode}", "inference.concurrency=2", "inference.fallback=D")
    with FakeOpenAI(models=("ans",), latency=1.0) as a, FakeOpenAI(models=("ev",), latency=1.0) as e:
        wall, clock = time.time(), time.monotonic()
        started, summary = _infer(project / "test.jsonl", project / "out", a, e, *sets,
                                  f"inference.deadline_s={deadline}")
        wall += started - clock  # the wall-clock time infer started
        err = capsys.readouterr().err
        out = summary.table()
        asked = a.completions + e.completions
        assert asked < 2 * len(qids)  # the run was cut

        # written (last) before the deadline, complete: every question has a letter
        assert (project / "out" / "submission.jsonl").stat().st_mtime < wall + deadline, err
        trace = read_jsonl(project / "out" / "trace.jsonl")
        assert [r["id"] for r in trace] == qids
        final = {q.qid: q.answer for q in read_dataset(project / "out" / "submission.jsonl").questions}
        assert final == {r["id"]: r["final"] for r in trace} and all(final.values())
        sources = Counter(r["source"] for r in trace)
        assert set(sources) <= {"evaluate", "answer_fallback", "fallback"} and sources["fallback"] > 0
        assert all(r["final"] in ("D", "A") for r in trace if r["source"] == "fallback")  # A: D not offered
        cut = [r for r in trace if any(p["kind"] == "not_asked" for p in r["errors"])]
        assert cut and all(r["status"] == "failed" for r in cut)
        assert {p["reason"] for r in cut for p in r["errors"] if p["kind"] == "not_asked"} == {"deadline"}
        # the summary counts each source and the questions cut
        assert int(row(out, "answered")) == len(qids)
        assert int(row(out, "  by the Evaluate Agent")) == sources["evaluate"]
        assert int(row(out, "  Answer letter fallback")) == sources["answer_fallback"]
        assert int(row(out, "  fallback letter (no answer read)")) == sources["fallback"]
        assert int(row(out, "not asked: deadline or server gone (asked again next run)")) == len(cut)

        # no deadline now: only what was cut is asked, and everything is done
        answered = sum(r["answer"]["samples"][0]["text"] is not None for r in trace)
        a.latency = e.latency = 0.0
        a.reset_counts(), e.reset_counts()
        code, out, err = cli("infer", project / "test.jsonl", "--out-dir", project / "out", "--answer-url", a.url,
                             "--evaluate-url", e.url, "--answer-model", "ans", "--evaluate-model", "ev",
                             *[x for s in sets for x in ("--set", s)])
        assert code == 0, err
        trace = read_jsonl(project / "out" / "trace.jsonl")
        assert all(r["status"] == "done" and r["source"] == "evaluate" for r in trace)
        # nothing answered before is asked again
        assert (a.completions, e.completions) == (len(qids) - answered, len(qids) - sources["evaluate"])


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
    """The stand-in first on PATH, and one Answer and one Evaluate adapter of the tiny base."""
    bin_dir = project / "bin"
    bin_dir.mkdir()
    script = bin_dir / "vllm"
    script.write_text(STAND_IN.format(python=sys.executable, tests=str(REPO / "tests"), answers=answers,
                                      latency=latency, stubborn=stubborn), encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    adapter_variant(project, "one-a", 8, serve={"weights": "adapter"})
    adapter_variant(project, "one-ev", 8, extends="tiny-evaluate.yaml", serve={"weights": "adapter"})
    return ("infer", project / "test.jsonl", "--out-dir", project / "out", "--answer-recipe", "recipes/one-a.yaml",
            "--evaluate-recipe", "recipes/one-ev.yaml", "--set", "inference.concurrency=2")


def test_the_deadline_write_does_not_wait_for_a_server_to_stop(tiny_project, cli, monkeypatch):
    """The submission is written at the deadline while the run still waits for its server to stop
    (this one ignores SIGTERM: 10 s of grace)."""
    project = tiny_project  # the adapters are served on the tiny base, which must be there
    write_competition(project / "test.jsonl", SHAPE)
    args = _stand_in(project, monkeypatch, latency=1.0, stubborn=True)
    watch = FirstWrite(project / "out" / "submission.jsonl")
    watch.start()
    deadline = 5.0  # the stand-in starts in about a second; 20 replies at 2 in flight take 10 s
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
