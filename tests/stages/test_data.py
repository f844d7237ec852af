"""`data check SUBMISSION --against TEST`: what it lists on the terminal."""

from __future__ import annotations

from pathlib import Path

from helpers import qids, write_file

SHAPE = [4, 4, 4, 3]  # 15 questions


def test_a_file_without_answers_lists_ten_then_counts(tmp_path: Path, cli) -> None:
    """The test file given as its own submission (no answer key anywhere, as round1_test_data.jsonl
    has none): ten questions named, then a count, then the one Error; not a line per question."""
    test = write_file(tmp_path / "test.jsonl", SHAPE, {})
    text = test.read_text(encoding="utf-8").replace(', "answer": null', "")
    test.write_text(text, encoding="utf-8")
    code, out, err = cli("data", "check", test, "--against", test)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 12 and all(x.startswith("problem: ") and "no answer (no answer key)" in x for x in lines[:10])
    assert lines[10] == "problem: ... and 5 more questions without an answer (counted wrong)"
    assert lines[11].startswith("Error: ") and lines[11].endswith("15 questions without an answer (counted wrong)")


def test_a_few_findings_are_each_listed(tmp_path: Path, cli) -> None:
    test = write_file(tmp_path / "test.jsonl", SHAPE, {})
    answers = {q: "A" for q in qids(SHAPE)} | {"p000#0": "Z", "p001#1": "Z"}
    submission = write_file(tmp_path / "sub.jsonl", SHAPE, answers)
    code, _, err = cli("data", "check", submission, "--against", test)
    assert code == 2
    assert [x for x in err.splitlines() if x.startswith("problem: ")] == [
        f"problem: {submission}:1: questions[0]: answer 'Z' is not one of the offered letters ABCD",
        f"problem: {submission}:2: questions[1]: answer 'Z' is not one of the offered letters ABCD",
    ]
