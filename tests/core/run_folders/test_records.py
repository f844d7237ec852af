"""The records between stages (core/run_folders/records.py): a training's manifest.json, a merged
model's orchestrator.json, an infer run's run.json and score.json, typed, versioned and
project-relative. A moved project compares its runs; a record that does not read is one Error line
naming the file and what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.core.common.errors import UserError
from orchestrator.core.run_folders.records import (
    Manifest,
    MergedStamp,
    RunRecord,
    ScoreRecord,
    read_manifest_in,
    read_merged_stamp,
    read_record,
    write_record,
    write_record_file,
)
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


# Each record: where it lies in the project, how it is read, one valid record (its paths
# absolute, as the stages hand them over), and one value of the wrong type with the message.
RECORDS = {
    "manifest": ("runs/tiny-answer/manifest.json", lambda f: read_manifest_in(f.parent),
                 lambda root: Manifest(role="answer", recipe={"role": "answer"}, recipe_file=str(root / "recipes/answer.yaml"),
                                       adapter=str(root / "runs/tiny-answer/adapter"), inputs={"train_yaml": "1"},
                                       identity="abc", adapter_hash="def", steps=3),
                 {"steps": "ten"}, "steps: Input should be a valid integer",
                 "train its role again with `--fresh` (its adapter is kept in runs/tiny-answer/kept/"),
    "kept manifest": ("runs/tiny-answer/kept/abc/manifest.json", lambda f: read_manifest_in(f.parent),
                      lambda root: Manifest(identity="abc", adapter=str(root / "runs/tiny-answer/kept/abc/adapter")),
                      {"identity": 7}, "identity: Input should be a valid string",
                      "delete runs/tiny-answer/kept/abc: a kept training whose record is lost"),
    "merged stamp": ("runs/tiny-answer/merged/orchestrator.json", lambda f: read_merged_stamp(f.parent),
                     lambda root: MergedStamp(role="answer", adapter=str(root / "runs/tiny-answer/adapter"),
                                              merge_yaml=str(root / "runs/tiny-answer/merge.yaml"), inputs={"adapter": "def"},
                                              identity="abc", seconds=1.5),
                     {"seconds": "slow"}, "seconds: Input should be a valid number",
                     "delete runs/tiny-answer/merged and `orchestrator merge` makes it again from its adapter"),
    "run": ("runs/a/run.json", lambda f: read_record(f.parent, RunRecord),
            lambda root: RunRecord(input="datasets/test.jsonl", limit=2, models={"answer": {"identity": "abc"}}),
            {"limit": "ten"}, "limit: Input should be a valid integer", "run `orchestrator infer` into runs/a again"),
    "score": ("runs/a/score.json", lambda f: read_record(f.parent, ScoreRecord),
              lambda root: ScoreRecord(submission=str(root / "runs/a/submission.jsonl"), gold=str(root / "datasets/gold.jsonl"),
                                       accuracy=0.5),
              {"submission": "s"}, "gold: Field required", "run `orchestrator score` on runs/a/submission.jsonl again"),
}
KINDS = list(RECORDS)


@pytest.mark.parametrize("kind", KINDS)
def test_a_record_reads_back_as_written_its_paths_project_relative(project: Path, kind: str) -> None:
    where, read, valid, *_ = RECORDS[kind]
    record = valid(project)
    write_record_file(project / where, record)
    on_disk = json.loads((project / where).read_text(encoding="utf-8"))
    assert on_disk["version"] == 1
    for name in record.PATHS:
        if getattr(record, name) is not None:
            assert on_disk[name] == str(Path(getattr(record, name)).relative_to(project)), name
    assert read(project / where) == record.model_copy(update={"version": 1, **{n: on_disk[n] for n in record.PATHS if n in on_disk}})


@pytest.mark.parametrize("kind", KINDS)
def test_a_record_of_the_previous_version_still_reads(project: Path, kind: str) -> None:
    """Version 0: no `version`, paths absolute, keys this version no longer knows."""
    where, read, valid, *_ = RECORDS[kind]
    old = {**valid(project).model_dump(exclude={"version"}, exclude_none=True), "a key of old": 1}
    (project / where).parent.mkdir(parents=True, exist_ok=True)
    (project / where).write_text(json.dumps(old), encoding="utf-8")
    record = read(project / where)
    assert record is not None and record.version == 0 and record.model_dump(exclude={"version"}, exclude_none=True) == {
        k: v for k, v in old.items() if k != "a key of old"}
    assert read(project / "runs" / "none" / Path(where).name) is None  # none there: None, not an error


BROKEN = [  # (the file's text, the problem in its Error line; None: the kind's wrong value)
    pytest.param("{\"role\": ", "not valid JSON", id="torn-json"),
    pytest.param("[1, 2]", "not a JSON object", id="not-a-mapping"),
    pytest.param(None, None, id="a-bad-value"),
    pytest.param("{\"version\": 7}", "written by a newer orchestrator, version 7; this one reads up to 1", id="newer"),
]


@pytest.mark.parametrize("text, problem", BROKEN)
@pytest.mark.parametrize("kind", KINDS)
def test_a_record_that_does_not_read_is_one_error_naming_it_and_the_fix(project: Path, kind: str, text: str | None,
                                                                       problem: str | None) -> None:
    where, read, _, bad, bad_problem, fix = RECORDS[kind]
    (project / where).parent.mkdir(parents=True, exist_ok=True)
    (project / where).write_text(json.dumps(bad) if text is None else text, encoding="utf-8")
    with pytest.raises(UserError) as info:
        read(project / where)
    (line,) = info.value.lines
    assert line.startswith(f"{where} is unreadable ({problem or bad_problem}"), line
    assert fix in line, line
    if problem and problem.startswith("written by a newer"):
        assert "upgrade orchestrator, or " in line


@pytest.mark.parametrize("kind, field, method", [("manifest", "recipe_file", "recipe_path"), ("score", "gold", "gold_path")])
def test_an_absolute_path_from_where_a_moved_project_was_is_found_where_it_is(project: Path, kind: str, field: str,
                                                                             method: str) -> None:
    """A record written before paths were kept relative, in a project since moved: the path it names
    is gone, and the same file of the project is read."""
    where, read, valid, *_ = RECORDS[kind]
    record = valid(project)
    recorded = Path(getattr(record, field))
    old = Path("/gone/home/someone/old-project") / recorded.relative_to(project)
    (project / where).parent.mkdir(parents=True, exist_ok=True)
    (project / where).write_text(json.dumps({**record.model_dump(exclude={"version"}), field: str(old)}), encoding="utf-8")
    recorded.parent.mkdir(parents=True, exist_ok=True)
    recorded.write_text("x", encoding="utf-8")
    assert getattr(read(project / where), method)() == recorded
    outside = project.parent / f"{project.name}-elsewhere.jsonl"  # (a path outside the project that exists: as it was)
    outside.write_text("x", encoding="utf-8")
    (project / where).write_text(json.dumps({**record.model_dump(exclude={"version"}), field: str(outside)}), encoding="utf-8")
    assert getattr(read(project / where), method)() == outside


CLI_BROKEN = [  # (file, its text, the Error line after "<folder>/<file> is unreadable (")
    pytest.param("score.json", "{\"gold\": ", "not valid JSON): run `orchestrator score` on", id="torn-score"),
    pytest.param("run.json", "{\"limit\": \"ten\"}", "limit: Input should be a valid integer",
                 id="a-bad-run"),
]


@pytest.mark.parametrize("name, text, message", CLI_BROKEN)
def test_compare_of_a_record_that_does_not_read_is_one_error_line(project: Path, cli, name: str, text: str,
                                                                 message: str) -> None:
    runs = [project / "runs" / n for n in ("a", "b")]
    for run in runs:
        write_file(run / "submission.jsonl", SHAPE, {q: "A" for q in qids(SHAPE)})
    (runs[0] / name).write_text(text, encoding="utf-8")
    code, out, err = cli("compare", *runs)
    assert (code, out) == (2, "")
    (line,) = err.splitlines()
    assert line.startswith(f"Error: runs/a/{name} is unreadable ({message}"), line
    assert "Traceback" not in err


def test_runs_of_a_manifest_that_does_not_read_is_one_error_line(project: Path, cli) -> None:
    """Before: `orchestrator runs` listed it with no recipe and no identity."""
    run = project / "runs" / "tiny-answer"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"w")
    (run / "manifest.json").write_text("{\"identity\": ", encoding="utf-8")
    code, out, err = cli("runs")
    assert (code, out) == (2, "")
    assert err.splitlines() == ["Error: runs/tiny-answer/manifest.json is unreadable (not valid JSON): train its role "
                                "again with `--fresh` (its adapter is kept in runs/tiny-answer/kept/)"]
