"""Teacher distillation against a real loopback OpenAI-compatible server with faults."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_openai import FailPrompts, FakeOpenAI, Script, expected_letter
from helpers import make_train, teacher_flags
from orchestrator.core.common.errors import UserError
from orchestrator.core.common.ledger import read_records
from orchestrator.core.recipes.loading import load_pipeline, load_role
from orchestrator.stages.distill import distill


def cache_lines(project: Path) -> list[dict]:
    return list(read_records(project / "runs" / "distill" / "teacher.jsonl"))


def test_every_question_cached_and_second_run_asks_nothing(project: Path) -> None:
    train = make_train(project / "train.jsonl")
    with FakeOpenAI(latency=0.01) as server:
        first = distill(pipeline=load_pipeline(None, teacher_flags(server.url)), input_path=str(train), echo=False)
        assert (first.questions, first.asked, first.cached, first.failed) == (12, 12, 0, 0)
        assert first.agreeing_first == 12
        asked = server.completions
        second = distill(pipeline=load_pipeline(None, teacher_flags(server.url)), input_path=str(train), echo=False)
        assert server.completions == asked == 12
        assert (second.cached, second.asked) == (12, 0)
    records = cache_lines(project)
    assert len(records) == len({r["key"] for r in records}) == 12
    assert all(r["status"] == "ok" and r["agrees"] and r["source"] == "teacher" for r in records)


@pytest.mark.parametrize(
    "script, retried",
    [
        ([("429", 0.2), "500", "truncated"], 3),
        (["nonjson", "empty_choices", "null_content"], 3),
        (["503", ("slow", 0.3), "drop"], 2),  # a slow reply within the timeout is a reply
    ],
)
def test_transient_faults_are_retried(project: Path, script: list, retried: int) -> None:
    train = make_train(project / "train.jsonl", problems=2, per_problem=2)
    with FakeOpenAI(faults=Script(script)) as server:
        summary = distill(pipeline=load_pipeline(None, teacher_flags(server.url, **{"teacher.timeout": 5})), input_path=str(train), echo=False)
        assert summary.failed == 0 and summary.asked == 4
        assert server.completions == 4 + retried
    assert not (project / "runs" / "distill" / "errors.jsonl").read_text()


def test_permanent_failures_go_to_errors_and_are_asked_again(project: Path, cli) -> None:
    train = make_train(project / "train.jsonl", problems=2, per_problem=2)
    flags = [f"--set={f}" for f in teacher_flags("URL", **{"teacher.max_retries": 1})]
    with FakeOpenAI(faults=FailPrompts("问题 1-1?", "500")) as server:
        flags = [f.replace("URL", server.url) for f in flags]
        code, out, err = cli("distill", "--input", train, *flags)
        assert code == 1
        (error,) = [line for line in err.splitlines() if line.startswith("Error:")]
        assert error.startswith("Error: 1 of 4 questions failed (t1#1: http 500); they are in ")
        errors = [json.loads(line) for line in (project / "runs/distill/errors.jsonl").read_text().splitlines()]
        assert [(e["qid"], e["reason"]) for e in errors] == [("t1#1", "http 500")]
        server.faults = None
        before = server.completions
        code, out, err = cli("distill", "--input", train, *flags)
        assert code == 0, err
        assert server.completions == before + 1  # only the failed question is asked again
    assert (project / "runs/distill/errors.jsonl").read_text() == ""


def test_rejection_sampling(project: Path) -> None:
    """Wrong at temperature 0, right when sampled: kept after a retry; never right: rejected."""
    train = make_train(project / "train.jsonl", problems=1, per_problem=2)

    def reply(prompt: str, request: dict) -> str:
        right = expected_letter(prompt)
        wrong = "D" if right != "D" else "C"
        hopeless = "问题 0-1?" in prompt
        letter = right if request.get("temperature", 0) > 0 and not hopeless else wrong
        return f"### 思考思路:\n1. 分析。\n### 可能的结果:\n答案是：{letter}"

    flags = teacher_flags("URL", **{"teacher.max_attempts": 3})
    with FakeOpenAI(reply=reply) as server:
        flags = tuple(f.replace("URL", server.url) for f in flags)
        summary = distill(pipeline=load_pipeline(None, flags), input_path=str(train), echo=False)
        assert (summary.agreeing_first, summary.agreeing_after_retries, summary.rejected) == (0, 1, 1)
        assert server.completions == 2 + 3
        again = distill(pipeline=load_pipeline(None, flags), input_path=str(train), echo=False)
        assert server.completions == 5 and again.cached == 2  # the rejected one is not asked again
    by_qid = {r["qid"]: r for r in cache_lines(project)}
    assert (by_qid["t0#0"]["status"], by_qid["t0#0"]["attempts"]) == ("ok", 2)
    assert (by_qid["t0#1"]["status"], by_qid["t0#1"]["attempts"], by_qid["t0#1"]["agrees"]) == ("rejected", 3, False)


def test_hint_gold_tells_the_teacher(project: Path) -> None:
    train = make_train(project / "train.jsonl", problems=1, per_problem=1)
    with FakeOpenAI() as server:
        distill(pipeline=load_pipeline(None, teacher_flags(server.url, **{"teacher.hint_gold": "true"})), input_path=str(train), echo=False)
        (prompt,) = server.prompts
    gold = json.loads(train.read_text())["questions"][0]["answer"]
    assert f"本题的正确答案是 {gold}" in prompt


def test_remote_teacher_without_key_is_one_clear_error(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    train = make_train(project / "train.jsonl", problems=1, per_problem=1)
    with pytest.raises(UserError) as info:
        distill(pipeline=load_pipeline(None, ("teacher.preload=[]",)), input_path=str(train), echo=False)
    assert info.value.lines == [
        "DEEPSEEK_API_KEY is not set: the endpoint https://api.deepseek.com/v1 needs an API key; export DEEPSEEK_API_KEY=...; "
        "or point at another teacher: teacher.base_url in your pipeline recipe, `--teacher-url URL` (with --teacher-model), "
        "or `make TEACHER_URL=URL TEACHER_MODEL=NAME TEACHER_KEY_ENV=VAR`"
    ]


def test_unreachable_teacher_fails_cleanly(project: Path, cli) -> None:
    from orchestrator.core.common.process import free_port

    train = make_train(project / "train.jsonl", problems=1, per_problem=2)
    url = f"http://127.0.0.1:{free_port()}/v1"
    code, out, err = cli("distill", "--input", train, *[f"--set={f}" for f in teacher_flags(url, **{"teacher.max_retries": 0})])
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith("Error:")] == [
        f"Error: 2 of 2 questions failed (t0#0: connection refused, ...); they are in {project}/runs/distill/errors.jsonl "
        "and are asked again when you run the same command"
    ]


@pytest.mark.parametrize("kill_after", [2, 9, 17])  # several points of the run
def test_sigkill_mid_run_then_rerun_completes(project: Path, kill_after: int) -> None:
    train = make_train(project / "train.jsonl", problems=8, per_problem=3)
    cache = project / "runs" / "distill" / "teacher.jsonl"
    with FakeOpenAI(latency=0.15) as server:
        cmd = [sys.executable, "-m", "orchestrator", "distill", "--input", str(train)]
        cmd += [f"--set={f}" for f in teacher_flags(server.url)]
        env = {**os.environ, "ORCHESTRATOR_HOME": str(project)}
        proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not cache.exists() or cache.read_text().count("\n") < kill_after):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_before = len(cache_lines(project))
        assert kill_after <= done_before < 24
        result = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    raw = cache.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.decode().splitlines()
    assert all(json.loads(line) for line in lines)  # no torn line
    keys = [json.loads(line)["key"] for line in lines]
    assert len(keys) == len(set(keys)) == 24  # each question exactly once


@pytest.mark.slow
def test_distill_from_real_llamafactory_api(tiny_project: Path) -> None:
    """The real client path end to end: `llamafactory-cli api` serving the tiny model.
    Its text is random; the machinery is what is checked."""
    import os

    from orchestrator.stages.serve import serve

    run = tiny_project / "runs" / "tiny-answer"
    run.mkdir(parents=True)
    os.symlink(tiny_project / "models" / "tiny-qwen2", run / "merged")  # served as if merged
    train = make_train(tiny_project / "train.jsonl", problems=2, per_problem=3)
    with serve(load_role("answer", "recipes/tiny-answer.yaml"), port=0, block=False) as serving:
        flags = (f"teacher.base_url={serving.url}", f"teacher.model={serving.model}", "teacher.preload=[]",
                 "teacher.max_tokens=24", "teacher.concurrency=2")
        first = distill(pipeline=load_pipeline(None, flags), input_path=str(train), echo=False)
        second = distill(pipeline=load_pipeline(None, flags), input_path=str(train), echo=False)
    assert first.asked + first.failed == 6 and first.requests >= 6
    records = cache_lines(tiny_project)
    errors = (tiny_project / "runs/distill/errors.jsonl").read_text().splitlines()
    assert len(records) + len(errors) == 6  # every question ends in the cache or in errors.jsonl
    assert all(isinstance(r["text"], str) and r["model"] == serving.model for r in records)
    assert second.requests == 0 and second.cached == len(records)


def test_flags_are_typed_values_and_recorded(project: Path, cli) -> None:
    """`--teacher-model 7` is the model named "7", not the number 7; the run prints and keeps it."""
    train = make_train(project / "train.jsonl", problems=1, per_problem=2)
    with FakeOpenAI() as server:
        code, out, err = cli("distill", "--input", train, "--teacher-url", server.url, "--teacher-model", "7",
                             "--set", "teacher.preload=[]")
    assert code == 0, err
    assert "[distill] teacher.model = '7'  (from --teacher-model)" in err
    assert "[distill] teacher.preload = []  (from --set)" in err
    assert {r["model"] for r in cache_lines(project)} == {"7"}
    settings = json.loads((project / "runs/distill/teacher_settings.json").read_text())
    assert settings["model"] == "7"
    assert settings["overrides"]["teacher.model"] == {"value": "7", "from": "--teacher-model"}
    assert settings["overrides"]["teacher.base_url"] == {"value": server.url, "from": "--teacher-url"}


def test_skip_invalid_distils_the_good_lines(project: Path, cli) -> None:
    train = make_train(project / "train.jsonl", problems=2, per_problem=2)
    train.write_text(train.read_text() + "not json\n", encoding="utf-8")
    with FakeOpenAI() as server:
        flags = [f"--set={f}" for f in teacher_flags(server.url)]
        code, out, err = cli("distill", "--input", train, *flags)
        assert code == 2 and err.splitlines() == [f"[distill] data.train = {train} (from --input)",
                                                  f"Error: {train}:3: not valid JSON (Expecting value, column 1)"]
        code, out, err = cli("distill", "--input", train, *flags, "--skip-invalid")
        assert code == 0, err
        assert f"[distill] skipped {train}:3: not valid JSON" in err
        assert server.completions == 4


@pytest.mark.parametrize("args, origin", [
    (["--input", "mine.jsonl"], "--input"),
    (["--set", "data.train=mine.jsonl"], "--set"),
])
def test_the_training_file_is_named_with_its_origin(project: Path, cli, args: list[str], origin: str) -> None:
    """A run names the file it reads and who chose it; a missing one is the tool's own error."""
    make_train(project / "mine.jsonl", problems=1, per_problem=2)
    with FakeOpenAI() as server:
        code, out, err = cli("distill", *args, *[f"--set={f}" for f in teacher_flags(server.url)])
        assert code == 0, err
        assert err.count("data.train = ") == 1 and f"[distill] data.train = mine.jsonl (from {origin})" in err
        code, out, err = cli("distill", "--set", "data.train=nope.jsonl", *[f"--set={f}" for f in teacher_flags(server.url)])
    assert (code, err) == (2, f"Error: data.train = nope.jsonl (from --set): no such file (looked for {project}/nope.jsonl)\n")


def test_a_make_variable_is_named_as_the_origin(project: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    make_train(project / "mine.jsonl", problems=1, per_problem=1)
    monkeypatch.setenv("ORCHESTRATOR_MAKE_VARIABLES", "data.train=TRAIN teacher.base_url=TEACHER_URL")
    with FakeOpenAI() as server:
        code, out, err = cli("distill", "--set", "data.train=mine.jsonl", "--set", f"teacher.base_url={server.url}",
                             "--limit", "1")
    assert code == 0, err
    assert "[distill] data.train = mine.jsonl (from TRAIN)" in err
    assert f"teacher.base_url = '{server.url}'  (from TEACHER_URL)" in err


def test_a_few_failing_questions_within_max_failed_let_distill_finish(project: Path, cli) -> None:
    """teacher.max_failed: distill ends done with the failed questions listed, asked again next run."""
    train = make_train(project / "train.jsonl", problems=2, per_problem=2)
    flags = [f"--set={f}" for f in teacher_flags("URL", **{"teacher.max_retries": 0})]
    with FakeOpenAI(faults=FailPrompts("问题 1-1?", "500")) as server:
        flags = [f.replace("URL", server.url) for f in flags]
        code, out, err = cli("distill", "--input", train, *flags, "--set", "teacher.max_failed=0.2")  # 0 of 4
        assert code == 1
        assert ("; to go on without them, allow them in the pipeline recipe: teacher.max_failed (a count, or a "
                "fraction such as 0.05)") in err
        for allowed in ("1", "0.25"):
            code, out, err = cli("distill", "--input", train, *flags, "--set", f"teacher.max_failed={allowed}")
            assert code == 0, err
            assert (f"Warning: 1 of 4 questions failed (teacher.max_failed {allowed} allows 1): they are left out of "
                    f"the datasets, listed in {project}/runs/distill/errors.jsonl, and asked again by the next "
                    f"distill") in err.splitlines()
        errors = [json.loads(line) for line in (project / "runs/distill/errors.jsonl").read_text().splitlines()]
        assert [e["qid"] for e in errors] == ["t1#1"]
        server.faults = None
        before = server.completions
        code, out, err = cli("distill", "--input", train, *flags, "--set", "teacher.max_failed=1")
        assert code == 0 and "Warning" not in err
        assert server.completions == before + 1  # only the failed question asked again
    assert (project / "runs/distill/errors.jsonl").read_text() == ""


def test_max_failed_is_a_count_or_a_fraction(project: Path, cli) -> None:
    code, out, err = cli("distill", "--set", "teacher.max_failed=1.5")
    assert code == 2 and "teacher.max_failed" in err and "a count of questions (e.g. 75) or a fraction" in err
    assert "Traceback" not in err


def test_a_limited_run_says_what_a_full_run_would_ask(project: Path, cli) -> None:
    train = make_train(project / "train.jsonl", problems=4, per_problem=2)
    with FakeOpenAI() as server:
        code, out, err = cli("distill", "--input", train, "--limit", "1", *[f"--set={f}" for f in teacher_flags(server.url)])
        assert code == 0, err
        assert server.completions == 2
    assert "[distill] --limit 1: the first 1 of 4 training problems (2 of 8 questions)" in err
    assert re.search(r"a full run \(no --limit\) would ask +6 more questions: 6 requests or more", out), out
    assert not list((project / "runs/distill").glob(".done*"))  # no stamp: the planner judges by content
