"""The competition format: quirks tolerated, every bad line reported with its number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.data import read_dataset, write_submission
from orchestrator.errors import UserError

GOOD = {"id": "p1", "problem": "有一些事实。", "questions": [{"question": "选择题 1：\n谁?", "options": ["甲", "乙"], "answer": "B"}]}


def write_lines(path: Path, lines: list[str], *, bom: bool = False, crlf: bool = False) -> Path:
    text = ("\r\n" if crlf else "\n").join(lines) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_quirks_are_tolerated(tmp_path: Path) -> None:
    no_id = {k: v for k, v in GOOD.items() if k != "id"}
    tuple_like = {**GOOD, "id": "p3", "questions": [{"question": "q", "options": "('1', '2', '3')", "answer": " c "}]}
    extra = {**GOOD, "id": "p4", "extra": 1, "problem": "  spaced  "}
    path = write_lines(
        tmp_path / "in.jsonl",
        [json.dumps(GOOD, ensure_ascii=False), "", "   ", json.dumps(no_id, ensure_ascii=False),
         json.dumps(tuple_like, ensure_ascii=False), json.dumps(extra, ensure_ascii=False)],
        bom=True, crlf=True,
    )
    ds = read_dataset(path)
    assert [p.id for p in ds.problems] == ["p1", "line4", "p3", "p4"]
    assert ds.problems[2].questions[0].options == ("1", "2", "3")
    assert ds.problems[2].questions[0].answer == "C"
    assert ds.problems[3].problem == "spaced"
    assert ds.summary().endswith("4 problems, 4 questions, 4 with answers")


BAD_LINES = [
    ("not json", "not valid JSON (Expecting value, column 1)"),
    ("[1, 2]", "a line must be a JSON object"),
    ('{"problem": "", "questions": []}', "problem must be a non-empty string"),
    ('{"problem": "p", "questions": []}', "questions must be a non-empty list"),
    ('{"problem": "p", "questions": [{"question": "q", "options": ["a"]}]}', "questions[0] has 1 options; 2 to 7 (A-G) are allowed"),
    ('{"problem": "p", "questions": [{"question": "q", "options": ["1","2","3","4","5","6","7","8"]}]}', "questions[0] has 8 options; 2 to 7 (A-G) are allowed"),
    ('{"problem": "p", "questions": [{"question": "q", "options": ["a", "b"], "answer": "C"}]}', "questions[0].answer 'C' is not one of the offered letters AB"),
    ('{"problem": "p", "questions": [{"question": "q", "options": "oops"}]}', "questions[0].options is text that is not a list"),
    ('{"problem": "p", "questions": [{"options": ["a", "b"]}]}', "questions[0].question must be a non-empty string"),
    ('{"problem": "p", "questions": [{"question": "q", "options": [["x"], "b"]}]}', "questions[0].options[0] must be text"),
    ('{"id": true, "problem": "p", "questions": [{"question": "q", "options": ["a", "b"]}]}', "id must be text"),
]


@pytest.mark.parametrize("line, reason", BAD_LINES)
def test_bad_line_reason(tmp_path: Path, line: str, reason: str) -> None:
    path = write_lines(tmp_path / "in.jsonl", [json.dumps(GOOD), line])
    with pytest.raises(UserError) as info:
        read_dataset(path)
    assert info.value.lines == [f"{path}:2: {reason}"]


def test_every_bad_line_is_reported_and_cli_exits_2(tmp_path: Path, cli) -> None:
    path = write_lines(tmp_path / "in.jsonl", ["nope", json.dumps(GOOD), "[]", json.dumps(GOOD)])
    code, out, err = cli("data", "check", path)
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"Error: {path}:1: not valid JSON (Expecting value, column 1)",
        f"Error: {path}:3: a line must be a JSON object",
        f"Error: {path}:4: id 'p1' repeats line 2",
    ]
    code, out, err = cli("data", "check", path, "--skip-invalid")
    assert code == 0
    assert out.strip() == f"{path}: 1 problems, 1 questions, 1 with answers, 3 bad lines skipped"
    assert err.count("skipped ") == 3


@pytest.mark.parametrize("content, reason", [(None, "no such file"), (b"", "no problems in the file (it is empty)")])
def test_missing_or_empty_file(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "x.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_dataset(path)
    assert info.value.lines == [f"{path}: {reason}"]


def test_submission_fills_answers_and_keeps_lines(tmp_path: Path) -> None:
    test_line = {"id": "t1", "problem": "p", "questions": [{"question": "q1", "options": ["a", "b"]}, {"question": "q2", "options": ["a", "b", "c"]}]}
    ds = read_dataset(write_lines(tmp_path / "test.jsonl", [json.dumps(test_line)]))
    out = write_submission(tmp_path / "sub.jsonl", ds, {"t1#0": "B", "t1#1": None})
    row = json.loads(out.read_text(encoding="utf-8"))
    assert [q["answer"] for q in row["questions"]] == ["B", None]
    assert read_dataset(out).problems[0].questions[0].answer == "B"


def test_shipped_sample_is_valid(cli) -> None:
    root = Path(__file__).resolve().parent.parent / "datasets" / "sample"
    for name in ("train.jsonl", "test.jsonl", "test_gold.jsonl"):
        code, out, err = cli("data", "check", root / name)
        assert code == 0, err
