"""Two-agent inference against real (fake) OpenAI-compatible servers on loopback: no mocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fake_openai import FailPrompts, FakeOpenAI, default_reply, expected_letter
from helpers import by_id, marker, read_jsonl, row, write_competition

from orchestrator.core.data.competition import read_dataset
from orchestrator.core.data.prompts import answer_prompt
from orchestrator.core.run_folders.trace import Sample, chosen_reply, chosen_sample, majority

# questions per problem, options per question


def sample_prior() -> str:
    """The most frequent gold letter of the shipped sample's training file."""
    from orchestrator.core.data.competition import letter_counts

    questions = read_dataset(Path(__file__).resolve().parents[2] / "datasets" / "sample" / "train.jsonl").questions
    return next(iter(letter_counts(questions)))


@pytest.fixture
def servers():
    with FakeOpenAI(models=("ans",)) as answer, FakeOpenAI(models=("ev",)) as evaluate:
        yield answer, evaluate


def infer_args(project: Path, answer: FakeOpenAI, evaluate: FakeOpenAI, *extra: str) -> list[str]:
    return ["infer", project / "test.jsonl", "--out-dir", project / "out", "--answer-url", answer.url,
            "--evaluate-url", evaluate.url, "--answer-model", "ans", "--evaluate-model", "ev",
            "--set", "inference.max_retries=1", *extra]


class Clock:
    """A reply function that notes when each request arrived."""

    def __init__(self, reply=default_reply):
        self.reply, self.times, self.lock = reply, [], threading.Lock()

    def __call__(self, prompt: str, request: dict) -> str:
        with self.lock:
            self.times.append(time.monotonic())
        return self.reply(prompt, request)


@pytest.mark.parametrize("mode", ["staged", "pipelined"])
def test_every_question_answered_then_rerun_sends_nothing(project, cli, mode):
    qids = write_competition(project / "test.jsonl")
    answer_clock, evaluate_clock = Clock(), Clock()
    with FakeOpenAI(latency=0.05, reply=answer_clock) as a, FakeOpenAI(latency=0.05, reply=evaluate_clock) as e:
        code, out, err = cli(*infer_args(project, a, e, "--mode", mode, "--concurrency", "2"))
        assert code == 0, err
        assert (a.completions, e.completions) == (len(qids), len(qids))
        if mode == "staged":
            assert max(answer_clock.times) < min(evaluate_clock.times)
        else:  # stage 2 starts while stage 1 is still running
            assert min(evaluate_clock.times) < max(answer_clock.times)

        submission = read_dataset(project / "out" / "submission.jsonl")
        assert [q.qid for q in submission.questions] == qids
        trace = read_jsonl(project / "out" / "trace.jsonl")
        assert [r["id"] for r in trace] == qids
        for q in submission.questions:
            record = trace[qids.index(q.qid)]
            assert record["status"] == "done" and record["source"] == "evaluate"
            assert q.answer == record["final"] == record["evaluate"]["letter"]
            assert record["answer"]["samples"][0]["letter"] == expected_letter(answer_prompt(q))
        disagreements = [r for r in trace if r["answer"]["letter"] != r["final"]]
        errors = read_jsonl(project / "out" / "errors.jsonl")
        assert [e["id"] for e in errors] == [r["id"] for r in disagreements]
        assert {e["kind"] for e in errors} <= {"disagreement"}
        assert row(out, "answered") == str(len(qids))

        a.reset_counts(), e.reset_counts()
        code, out, err = cli(*infer_args(project, a, e, "--mode", mode))
        assert code == 0, err
        assert (a.requests, e.requests) == (0, 0)
        assert read_jsonl(project / "out" / "trace.jsonl") == trace
        assert row(out, "finished by an earlier run") == str(len(qids))


def test_changed_settings_are_not_taken_for_done_work(project, cli, servers):
    a, e = servers
    qids = write_competition(project / "test.jsonl")
    assert cli(*infer_args(project, a, e))[0] == 0
    a.reset_counts(), e.reset_counts()
    assert cli(*infer_args(project, a, e, "--set", "inference.max_tokens=99"))[0] == 0
    assert (a.completions, e.completions) == (len(qids), len(qids))
    assert len(read_jsonl(project / "out" / "trace.jsonl")) == len(qids)  # one line per question still


def test_a_question_backing_off_holds_no_slot_of_the_concurrency(project, cli):
    """inference.concurrency 1: while the first question waits out its 429's Retry-After (2 s),
    the others are asked; it is asked again after them and answered."""
    from fake_openai import Script

    qids = write_competition(project / "test.jsonl", [[4], [4], [4]])
    with FakeOpenAI(models=("ans",), faults=Script([("429", 2)])) as a, FakeOpenAI(models=("ev",)) as e:
        code, _, err = cli(*infer_args(project, a, e, "--concurrency", "1"))
        assert code == 0, err
        first = a.prompts[0]
        assert a.prompts.count(first) == 2 and a.prompts[-1] == first and len(a.prompts) == len(qids) + 1
    trace = read_jsonl(project / "out" / "trace.jsonl")
    assert all(r["status"] == "done" for r in trace)
    assert sorted(r["answer"]["samples"][0]["attempts"] for r in trace) == [1, 1, 2]


@pytest.mark.parametrize("letters, expected", [
    ([], None), ([None, None], None), (["C"], "C"), (["A", "B", "B"], "B"), (["B", "A", "A", "B"], "B"),
    ([None, "D", "C"], "D"), (["A", None, "C", "C", "A"], "A"), (["E", "F", "F", "E", "G", "G"], "E"),
])
def test_majority_breaks_ties_by_the_earliest_sample(letters, expected):
    assert majority(letters) == expected


def _sample(letter, text=None):
    return Sample(letter=letter, text=text or f"reasoning for {letter}")


FAILED = Sample(error="timeout")  # a failed request: no text


@pytest.mark.parametrize("samples, expected", [
    ([], None), ([FAILED, FAILED], None),
    ([_sample("C")], 0),
    ([FAILED, _sample("B"), _sample("A"), _sample("A")], 2),  # the first agreeing with the majority
    ([_sample(None), _sample("D")], 1),
    ([_sample(None), FAILED, _sample(None)], 0),  # no letter read: the first sample with text
    ([_sample("A"), _sample("B"), _sample("B"), _sample("A")], 0),  # a tie: the earliest
])
def test_the_evaluate_agent_reads_the_first_sample_agreeing_with_the_majority(samples, expected):
    assert chosen_sample(samples) == expected
    assert chosen_reply(samples) == (None if expected is None else samples[expected])


class Scripted:
    """Answer replies whose letters follow `letters` per prompt, in arrival order (None: no letter)."""

    def __init__(self, letters: list[str | None]):
        self.letters, self.seen, self.temperatures = letters, Counter(), []
        self.lock = threading.Lock()

    def __call__(self, prompt: str, request: dict) -> str:
        with self.lock:
            n = self.seen[prompt]
            self.seen[prompt] += 1
            self.temperatures.append(request.get("temperature"))
        letter = self.letters[n % len(self.letters)]
        result = f"答案是：{letter}" if letter else "无法确定。"
        return f"### 思考思路:\n1. 第{n}次推理。\n### 可能的结果:\n{result}"


# (letters the K samples give, in some order; the winner, or the set of letters tied for first)
VOTES = [
    pytest.param(["B", "A", "B"], "B", id="majority"),
    pytest.param(["C", "C", "C"], "C", id="unanimous"),
    pytest.param(["A", "B"], {"A", "B"}, id="tie-two"),
    pytest.param(["A", "B", "B", "A"], {"A", "B"}, id="tie-four"),
    pytest.param([None, "A", "B"], {"A", "B"}, id="tie-with-unparseable"),
    pytest.param([None, None, None], None, id="no-letter"),
]


@pytest.mark.parametrize("letters, winner", VOTES)
def test_votes_majority_and_tie_break(project, cli, letters, winner):
    qids = write_competition(project / "test.jsonl", [[4], [4]])
    script = Scripted(letters)
    # the Evaluate Agent never gives a letter here, so the final answer is the vote
    with FakeOpenAI(reply=script) as a, FakeOpenAI(reply=lambda p, r: "我不知道。") as e:
        code, out, err = cli(*infer_args(project, a, e, "--votes", str(len(letters))))
    assert code == 0, err
    assert script.temperatures == [0.7] * len(letters) * len(qids)  # vote_temperature
    trace = by_id(project / "out" / "trace.jsonl")
    evaluate_prompts = e.prompts
    for qid in qids:
        record = trace[qid]
        recorded = [s["letter"] for s in record["answer"]["samples"]]
        assert sorted(recorded, key=str) == sorted(letters, key=str)
        expected = winner if not isinstance(winner, set) else next(x for x in recorded if x in winner)
        assert record["answer"]["letter"] == expected
        assert record["final"] == (expected or sample_prior())  # no letter at all: the training prior
        assert record["answer"]["votes"] == dict(Counter(x for x in letters if x))
        chosen = record["answer"]["samples"][record["answer"]["chosen"]]
        assert chosen["letter"] == expected
        [prompt] = [p for p in evaluate_prompts if marker(qid) in p]
        assert chosen["text"] in prompt  # what the Evaluate Agent read
        assert record["source"] == ("vote_fallback" if expected else "fallback")
    errors = Counter((x["kind"], x["stage"]) for x in read_jsonl(project / "out" / "errors.jsonl"))
    n = len(qids)
    assert errors[("unparseable", "evaluate")] == n
    assert errors[("unparseable", "answer")] == n * letters.count(None)
    assert errors[("no_answer", "final")] == (n if winner is None else 0)


def test_single_vote_uses_temperature(project, cli):
    write_competition(project / "test.jsonl", [[4]])
    script = Scripted(["B"])
    with FakeOpenAI(reply=script) as a, FakeOpenAI() as e:
        assert cli(*infer_args(project, a, e, "--set", "inference.temperature=0.2"))[0] == 0
    assert script.temperatures == [0.2]
    assert by_id(project / "out" / "trace.jsonl")["p000#0"]["answer"]["letter"] == "B"


@pytest.mark.parametrize("mode", ["staged", "pipelined"])
def test_evaluate_failure_falls_back_to_answer_letter_then_retries(project, cli, mode):
    qids = write_competition(project / "test.jsonl")
    failing = "p001#1"
    with FakeOpenAI() as a, FakeOpenAI(faults=FailPrompts("问题1-1", "500")) as e:
        code, out, err = cli(*infer_args(project, a, e, "--mode", mode))
        assert code == 1
        assert "Error: 1 questions had a failed request (p001#1 (evaluate): http 500)" in err
        record = by_id(project / "out" / "trace.jsonl")[failing]
        assert record["status"] == "failed" and record["source"] == "answer_fallback"
        assert record["final"] == record["answer"]["letter"] is not None
        submission = {q.qid: q.answer for q in read_dataset(project / "out" / "submission.jsonl").questions}
        assert submission[failing] == record["final"] and None not in submission.values()
        [error] = [x for x in read_jsonl(project / "out" / "errors.jsonl") if x["kind"] == "api"]
        assert error == {"id": failing, "stage": "evaluate", "kind": "api", "reason": "http 500", "attempts": 2,
                         "detail": "Error code: 500 - fake fault 500"}
        assert row(out, "  Answer letter fallback") == "1"

        e.faults = None
        a.reset_counts(), e.reset_counts()
        code, out, err = cli(*infer_args(project, a, e, "--mode", mode))
        assert code == 0, err
        assert (a.completions, e.completions) == (0, 1)  # stage 1 came from stage1.jsonl
        assert by_id(project / "out" / "trace.jsonl")[failing]["status"] == "done"
        assert not [x for x in read_jsonl(project / "out" / "errors.jsonl") if x["kind"] == "api"]
        assert len(read_jsonl(project / "out" / "trace.jsonl")) == len(qids)


FALLBACKS = [
    # (inference.fallback, the letter the unanswered question gets, the summary row that counts it)
    pytest.param([], "prior", "  fallback letter (no answer read)", id="prior-by-default"),
    pytest.param(["--set", "inference.fallback=d"], "D", "  fallback letter (no answer read)", id="fixed-letter"),
    pytest.param(["--set", "inference.fallback=G"], "A", "  fallback letter (no answer read)", id="letter-not-offered-is-A"),
    pytest.param(["--set", "inference.fallback=null"], None, "without an answer (null)", id="null-keeps-no-answer"),
]


@pytest.mark.parametrize("flags, letter, counted", FALLBACKS)
def test_permanent_failure_of_both_stages_gets_the_fallback_listed_and_counted(project, cli, flags, letter, counted):
    qids = write_competition(project / "test.jsonl")
    failing = "p002#0"
    letter = sample_prior() if letter == "prior" else letter
    with FakeOpenAI(faults=FailPrompts("问题2-0")) as a, FakeOpenAI(faults=FailPrompts("问题2-0")) as e:
        code, out, err = cli(*infer_args(project, a, e, *flags))
    assert code == 1
    assert row(out, counted) == "1"
    if not flags:
        assert f"fallback: {letter}, the most frequent gold letter of" in err
    submission = read_dataset(project / "out" / "submission.jsonl")
    assert [q.qid for q in submission.questions] == qids  # nothing dropped
    assert {q.qid: q.answer for q in submission.questions}[failing] == letter
    errors = [(x["kind"], x["stage"]) for x in read_jsonl(project / "out" / "errors.jsonl") if x["id"] == failing]
    assert errors == [("api", "answer"), ("no_answer", "final")]
    assert not any("问题2-0" in p for p in e.prompts)  # no Answer text, nothing to evaluate
    record = by_id(project / "out" / "trace.jsonl")[failing]
    assert (record["final"], record["source"]) == (letter, "none" if letter is None else "fallback")
    assert record["evaluate"] is None
    assert record["answer"]["samples"] == [{"model": "ans", "index": 0, "round": 0, "text": None, "letter": None, "latency": None,
                                            "attempts": 2, "finish_reason": None, "error": "http 500"}]


def test_the_prior_needs_no_training_file(project, cli, servers):
    """Against endpoints, without data.train: the fallback is A, and the run says so."""
    a, e = servers
    write_competition(project / "test.jsonl")
    code, _out, err = cli(*infer_args(project, a, e, "--set", "data.train=nothing/here.jsonl"))
    assert code == 0, err
    assert "fallback: no training file" in err and "using A" in err


def test_the_prior_follows_the_fixes(project, cli, servers):
    """The prior is taken after the corrections: every sample question fixed to A makes it A."""
    from orchestrator.core.data.competition import read_dataset as read

    train = read(project / "datasets" / "sample" / "train.jsonl")
    fixes = "".join(f"{q.qid}: A\n" for q in train.questions)
    (project / "fixes.yaml").write_text(fixes, encoding="utf-8")
    a, e = servers
    write_competition(project / "test.jsonl")
    code, _out, err = cli(*infer_args(project, a, e, "--set", "data.fixes=fixes.yaml"))
    assert code == 0, err
    n = len(train.questions)
    assert "fallback: A, the most frequent gold letter of" in err and f"({n} of {n}, 100%)" in err


def test_limit_takes_the_first_problems(project, cli, servers):
    a, e = servers
    write_competition(project / "test.jsonl")
    assert cli(*infer_args(project, a, e, "--limit", "2"))[0] == 0
    submission = read_dataset(project / "out" / "submission.jsonl")
    assert [p.id for p in submission.problems] == ["p000", "p001"]
    assert [r["id"] for r in read_jsonl(project / "out" / "trace.jsonl")] == ["p000#0", "p001#0", "p001#1"]
    assert (a.completions, e.completions) == (3, 3)


def test_api_key_never_reaches_a_file_or_the_output(project, cli, monkeypatch):
    key = "sk-INFER-SECRET-0123456789"
    monkeypatch.setenv("INFER_KEY", key)
    write_competition(project / "test.jsonl")
    # the 401 body echoes the key it was sent, as some servers do
    with FakeOpenAI(api_key=key) as a, FakeOpenAI(api_key=key, faults=FailPrompts("问题1-0", "401")) as e:
        code, out, err = cli(*infer_args(project, a, e, "--set", "inference.api_key_env=INFER_KEY"))
    assert code == 1
    assert a.completions == 9
    for path in (project / "out").iterdir():
        assert key not in path.read_text(encoding="utf-8"), path
    assert key not in out + err
    [error] = [x for x in read_jsonl(project / "out" / "errors.jsonl") if x["kind"] == "api"]
    assert error["reason"].startswith("http 401") and "***" in error["detail"]


def test_model_name_defaults_to_the_one_the_endpoint_lists(project, cli, servers):
    a, e = servers
    write_competition(project / "test.jsonl", [[3]])
    args = ["infer", project / "test.jsonl", "--out-dir", project / "out",
            "--answer-url", a.url, "--evaluate-url", e.url]
    assert cli(*args)[0] == 0
    record = read_jsonl(project / "out" / "trace.jsonl")[0]
    assert (record["answer"]["model"], record["evaluate"]["model"]) == ("ans", "ev")


def _run_infer(project: Path, a: FakeOpenAI, e: FakeOpenAI, mode: str) -> subprocess.Popen:
    args = [str(x) for x in infer_args(project, a, e, "--mode", mode, "--concurrency", "2")]
    env = {**os.environ, "ORCHESTRATOR_HOME": str(project)}
    return subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _count_afresh(*servers: FakeOpenAI) -> None:
    """Counts from zero with nothing of the killed run left: a request it sent just before the
    SIGKILL may still be read (and counted) by the server after a bare reset_counts()."""
    for s in servers:
        s.stop()
        limit = time.monotonic() + 10
        while s.in_flight and time.monotonic() < limit:
            time.sleep(0.02)
        s.reset_counts()
        s.start()


@pytest.mark.parametrize("mode, watched", [("pipelined", "trace.jsonl"), ("staged", "stage1.jsonl")])
def test_sigkill_mid_run_then_rerun_completes_once(project, mode, watched):
    qids = write_competition(project / "test.jsonl", [[4, 3]] * 12)
    out = project / "out"
    with FakeOpenAI(latency=0.1) as a, FakeOpenAI(latency=0.1) as e:
        proc = _run_infer(project, a, e, mode)
        deadline = time.monotonic() + 60
        while _lines(out / watched) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for name in ("trace.jsonl", "stage1.jsonl"):  # a crash mid-write leaves a torn tail
            with (out / name).open("ab") as f:
                f.write(b'{"key": "torn", "id": "p0')
        done_before = {json.loads(line)["id"] for line in (out / "trace.jsonl").read_bytes().splitlines()[:-1]}
        answered_before = {json.loads(line)["id"] for line in (out / "stage1.jsonl").read_bytes().splitlines()[:-1]}
        assert len(answered_before) >= 4 and done_before <= answered_before
        _count_afresh(a, e)

        proc = _run_infer(project, a, e, mode)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr

    trace = read_jsonl(out / "trace.jsonl")  # every line whole
    assert sorted(r["id"] for r in trace) == sorted(qids)
    assert all(r["status"] == "done" for r in trace)
    assert not any(marker(qid) in p for qid in answered_before for p in a.prompts)  # nothing asked twice
    assert not any(marker(qid) in p for qid in done_before for p in e.prompts)
    assert (a.completions, e.completions) == (len(qids) - len(answered_before), len(qids) - len(done_before))
    submission = read_dataset(out / "submission.jsonl")
    assert all(q.answer for q in submission.questions)


def test_answers_of_another_model_are_counted_and_said(project, cli, servers):
    """After a retrain (here: another Answer model name) nothing is silently `already done`."""
    a, e = servers
    write_competition(project / "test.jsonl", [[4], [3, 5]])
    assert cli(*infer_args(project, a, e))[0] == 0
    code, out, err = cli("infer", project / "test.jsonl", "--out-dir", project / "out", "--answer-url", a.url,
                         "--evaluate-url", e.url, "--answer-model", "ans-retrained", "--evaluate-model", "ev")
    assert code == 0, err
    assert "[infer] 3 questions, 0 already done" in err
    assert "[infer] 3 questions an earlier run answered are asked again: a model, the prompts or the sampling changed" in err
    rows = {line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1] for line in out.splitlines()}
    assert rows["asked again (a model or setting changed)"] == "3"
