"""The records of an infer run folder (core/run_folders/records.py): run.json and score.json,
typed, versioned and project-relative. A moved project compares its runs; a record that does not
read is one Error line naming the file and how to write it again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.core.run_folders.records import RunRecord, ScoreRecord, read_record, write_record
from helpers import qids, write_file

SHAPE = [2, 1, 3]


def _scored_runs(cli, project: Path) -> list[Path]:
    """Two run folders of the project scored by the real `score` against datasets/gold.jsonl."""
    gold = write_file(project / "datasets" / "gold.jsonl", SHAPE, {q: "A" for q in qids(SHAPE)})
    runs = []
    for name, wrong in (("a", set()), ("b", {qids(SHAPE)[0]})):
        run = project / "runs" / name
        write_file(run / "submission.jsonl", SHAPE, {q: "B" if q in wrong else "A" for q in qids(SHAPE)})
        write_record(run, RunRecord(input="datasets/test.jsonl", limit=None, inference={"votes": len(wrong) + 1}))
        code, _, err = cli("score", run / "submission.jsonl", gold, "--out-dir", run)
        assert code == 0, err
        runs.append(run)
    return runs


def test_score_keeps_project_relative_paths(project: Path, cli) -> None:
    a, _ = _scored_runs(cli, project)
    kept = json.loads((a / "score.json").read_text(encoding="utf-8"))
    assert kept == {"version": 1, "submission": "runs/a/submission.jsonl", "gold": "datasets/gold.jsonl",
                    "accuracy": 1.0}


def test_a_moved_project_compares_its_runs(project: Path, cli, tmp_path: Path, monkeypatch) -> None:
    """Before: score.json held the gold's absolute path, and the moved project's compare looked
    for it where the project used to be."""
    _scored_runs(cli, project)
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.move(project, moved)
    monkeypatch.chdir(moved)
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(moved))
    code, out, err = cli("compare", "runs/a", "runs/b", "--out-dir", moved / "cmp")
    assert code == 0, err
    assert "datasets/gold.jsonl" in out
    assert "inference.votes" in (moved / "cmp" / "compare.md").read_text(encoding="utf-8")  # run.json read too


def test_an_older_record_without_a_version_still_reads(tmp_path: Path, project: Path) -> None:
    gold = project / "datasets" / "gold.jsonl"
    (tmp_path / "score.json").write_text(json.dumps({"submission": "/x/s.jsonl", "gold": str(gold)}))
    (tmp_path / "run.json").write_text(json.dumps({"input": "/x/test.jsonl", "limit": 2, "extra": 1}))
    score, run = read_record(tmp_path, ScoreRecord), read_record(tmp_path, RunRecord)
    assert score is not None and score.version == 0 and score.gold_path() == gold
    assert run is not None and (run.limit, run.models) == (2, {})
    assert read_record(tmp_path / "nothing-here", RunRecord) is None


BROKEN = [  # (file, its text, the Error line after "<folder>/<file>: ")
    pytest.param("score.json", "{\"gold\": ", "not a readable score.json (invalid JSON: ", id="torn-json"),
    pytest.param("score.json", "{\"submission\": \"s\"}", "not a readable score.json (gold: Field required); ",
                 id="no-gold"),
    pytest.param("run.json", "[1, 2]", "not a readable run.json (the file: Input should be a valid dictionary",
                 id="not-a-mapping"),
    pytest.param("run.json", "{\"limit\": \"ten\"}", "not a readable run.json (limit: Input should be a valid integer",
                 id="a-bad-value"),
    pytest.param("run.json", "{\"version\": 7}", "written by a newer orchestrator (version 7; this one reads up to 1)",
                 id="newer"),
]


@pytest.mark.parametrize("name, text, message", BROKEN)
def test_a_record_that_does_not_read_is_one_error_line(project: Path, cli, name: str, text: str, message: str) -> None:
    runs = [project / "runs" / n for n in ("a", "b")]
    for run in runs:
        write_file(run / "submission.jsonl", SHAPE, {q: "A" for q in qids(SHAPE)})
    (runs[0] / name).write_text(text, encoding="utf-8")
    code, out, err = cli("compare", *runs)
    assert (code, out) == (2, "")
    (line,) = err.splitlines()
    assert line.startswith(f"Error: {runs[0] / name}: {message}"), line
    again = "`orchestrator infer` into" if name == "run.json" else "`orchestrator score` on"
    assert again in line and "Traceback" not in err
