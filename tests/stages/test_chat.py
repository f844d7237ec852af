"""`orchestrator chat ROLE`: a competition line asked in the training prompt, other text as it is;
(slow) the real `llamafactory-cli api` answering in the terminal, stopped at /quit."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from orchestrator.core.common.paths import project_root
from orchestrator.core.data.competition import read_dataset
from orchestrator.core.data.prompts import answer_prompt, evaluate_prompt
from orchestrator.stages.chat import prompts_for


def first_line() -> tuple[str, list]:
    path = project_root() / "datasets" / "sample" / "test.jsonl"
    line = path.read_text(encoding="utf-8").splitlines()[0]
    return line, read_dataset(path).problems[0].questions


@pytest.mark.parametrize("role", ["answer", "evaluate"])
def test_a_competition_line_is_asked_in_the_training_prompt(project: Path, role: str) -> None:
    line, questions = first_line()
    obj = {**json.loads(line), "think": "### 思考思路:\n1. 排除"}
    prompts, note = prompts_for(role, json.dumps(obj, ensure_ascii=False))
    want = [answer_prompt(q) if role == "answer" else evaluate_prompt(q, obj["think"]) for q in questions]
    assert (prompts, note) == (want, None)


@pytest.mark.parametrize(
    "line, note",
    [("你好", None), ('{"problem": "p"}', "not a competition line (questions must be a non-empty list): sent as it is"),
     ("{not json", "not a competition line (Expecting property name enclosed in double quotes: line 1 column 2 "
      "(char 1)): sent as it is")],
)
def test_other_lines_go_as_they_are(project: Path, line: str, note: str | None) -> None:
    assert prompts_for("answer", line) == ([line], note)


@pytest.mark.slow
def test_chat_with_the_served_model(tiny_project: Path, tiny_model_dir: Path, cli, monkeypatch) -> None:
    run = tiny_project / "runs" / "tiny-answer"
    run.mkdir(parents=True)
    os.symlink(tiny_model_dir, run / "merged")  # the tiny model stands in for a merged one
    line, questions = first_line()
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{line}\n你好\n/quit\nnever asked\n"))
    code, out, err = cli("chat", "answer", "--recipe", "recipes/tiny-answer.yaml", "--max-tokens", "8")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "chatting with tiny-answer (answer model, template qwen); a competition line is asked in " \
                       "the training prompt; /quit ends"
    assert len(lines) >= 1 + len(questions) + 1  # a reply per question, then one for 你好
    assert "ready: http://127.0.0.1:" in err
