"""API keys come from environment variables only and never reach a file, a trace or a log."""

from __future__ import annotations

from pathlib import Path

import pytest

from fake_openai import FakeOpenAI
from helpers import make_train

SENTINEL = "sk-SENTINEL-7f3c9a1e5b"


def leaks(root: Path, outputs: list[str]) -> list[str]:
    found = [str(p) for p in root.rglob("*") if p.is_file() and SENTINEL.encode() in p.read_bytes()]
    return found + [f"output #{i}" for i, text in enumerate(outputs) if SENTINEL in text]


def test_no_command_writes_or_prints_the_key(project: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", SENTINEL)
    monkeypatch.setenv("ENDPOINT_KEY", SENTINEL)
    train = make_train(project / "train.jsonl", problems=2, per_problem=2)
    outputs: list[str] = []

    def run(*args: object, expect: int = 0) -> None:
        code, out, err = cli(*args)
        outputs.extend([out, err])
        assert code == expect, err

    with FakeOpenAI(api_key=SENTINEL) as server:
        teacher = [f"--set=teacher.base_url={server.url}", "--set=teacher.model=fake-model", "--set=teacher.preload=[]"]
        endpoints = ["--answer-url", server.url, "--evaluate-url", server.url, "--set=inference.api_key_env=ENDPOINT_KEY"]
        run("render")
        run("check", "answer")
        run("data", "check", train)
        run("distill", "--input", train, *teacher)
        run("dataset", "answer", "--input", train)
        run("dataset", "evaluate", "--input", train)
        run("infer", train, "--out-dir", project / "runs" / "infer", *endpoints)
        run("score", project / "runs" / "infer" / "submission.jsonl", train, "--out-dir", project / "runs" / "infer")
        assert server.completions == 4 + 8  # the key was really sent and accepted

    with FakeOpenAI(api_key="another-key") as server:  # 401 bodies echo the key that was sent
        teacher = [f"--set=teacher.base_url={server.url}", "--set=teacher.model=fake-model", "--set=teacher.preload=[]",
                   "--set=teacher.temperature=0.5"]
        run("distill", "--input", train, *teacher, expect=1)
        run("infer", train, "--out-dir", project / "runs" / "infer401", "--answer-url", server.url,
            "--evaluate-url", server.url, "--answer-model", "m", "--evaluate-model", "m",
            "--set=inference.api_key_env=ENDPOINT_KEY", expect=1)
        assert "refused the API key" in outputs[-1] + outputs[-3]

    assert leaks(project, outputs) == []


def test_key_variable_name_not_key(project: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key pasted where the variable's name belongs is refused without being repeated."""
    code, out, err = cli("distill", "--set", f"teacher.api_key_env={SENTINEL}", "--set", "teacher.preload=[]",
                         "--input", make_train(project / "t.jsonl", 1, 1))
    assert code == 2 and SENTINEL not in out + err
    assert err.startswith("Error: ")
