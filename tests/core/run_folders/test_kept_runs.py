"""Every infer and eval run kept by identity (core/run_folders/kept_runs.py): a run of another
identity moved aside with its planner records (a copy of its ledger left for the next run), one of
this identity brought back, an interrupted
run resumed where it was, a move cut short finished, files of no known identity left alone; the
runs named as `orchestrator runs` and `compare` name them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.core.project.identity import file_identity
from orchestrator.core.project.plan import Record, read_record, write_record
from orchestrator.core.run_folders.kept_runs import IDENTITY, RECORDS, run_named, prepare, recorded_identity, runs

FOLDER = "runs/tiny-infer"


def _run(project: Path, identity: str, answer: str = "A", finished: bool = True, identity_file: bool = True) -> Path:
    """What infer then score leave in the folder, and the planner's records of both."""
    folder = project / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "submission.jsonl").write_text(json.dumps({"answer": answer}) + "\n")
    (folder / "trace.jsonl").write_text(f"trace of {identity}\n")
    (folder / "report.md").write_text(f"report of {identity}\n")
    (folder / "score.json").write_text(json.dumps({"gold": "g", "accuracy": 0.5}))
    if identity_file:
        (folder / IDENTITY).write_text(json.dumps({"identity": identity}))
    if finished:
        for stage, output in (("infer-tiny-infer", "submission.jsonl"), ("score-tiny-infer", "report.md")):
            write_record(Record(stage=stage, identity=identity if stage.startswith("infer") else "s-" + identity,
                                inputs={}, outputs={f"{FOLDER}/{output}": file_identity(folder / output)}, command=[]))
    return folder


def _files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


def test_another_identity_is_kept_and_going_back_restores_it_with_its_records(project: Path) -> None:
    folder = _run(project, "aaaa")
    before = _files(folder)
    inode = (folder / "trace.jsonl").stat().st_ino
    moved = prepare(folder, "bbbb", "infer-tiny-infer")
    entry = folder / "kept" / "aaaa"
    assert moved.kept == entry and not moved.restored
    assert {**_files(entry)} == {**before, RECORDS: (entry / RECORDS).read_text()}
    assert (entry / "trace.jsonl").stat().st_ino == inode  # moved, not copied
    assert sorted(json.loads((entry / RECORDS).read_text())) == ["infer-tiny-infer", "score-tiny-infer"]
    assert sorted(_files(folder)) == [IDENTITY, "trace.jsonl"] and recorded_identity(folder) == "bbbb"
    # the new run reads what was asked before from a copy of the ledger (its own: it appends to it)
    assert (folder / "trace.jsonl").read_text() == before["trace.jsonl"] and (folder / "trace.jsonl").stat().st_ino != inode

    _run(project, "bbbb", answer="B")  # the new run finished; its records replace the old ones
    back = prepare(folder, "aaaa", "infer-tiny-infer")
    assert back.restored and back.kept == folder / "kept" / "bbbb"
    assert _files(folder) == before and not entry.exists()
    assert read_record("infer-tiny-infer").identity == "aaaa" and read_record("score-tiny-infer").identity == "s-aaaa"
    assert json.loads((folder / "kept/bbbb/submission.jsonl").read_text()) == {"answer": "B"}


# (the folder before, the identity asked for) -> where the folder's files are after
CASES = [
    pytest.param(dict(identity="aaaa"), "aaaa", {"kept": False, "restored": False}, id="same-identity-nothing-moves"),
    pytest.param(dict(identity="aaaa", finished=False), "bbbb", {"kept": True, "restored": False},
                 id="an-interrupted-run-kept-under-the-identity-it-started-with"),
    pytest.param(dict(identity="aaaa", finished=False), "aaaa", {"kept": False, "restored": False},
                 id="an-interrupted-run-resumes-in-place"),
    pytest.param(dict(identity="aaaa", identity_file=False), "bbbb", {"kept": True, "restored": False},
                 id="a-folder-from-before-known-by-its-record"),
    pytest.param(dict(identity="aaaa", finished=False, identity_file=False), "bbbb", {"kept": False, "restored": False},
                 id="files-of-no-known-identity-stay"),
]


@pytest.mark.parametrize("before, identity, after", CASES)
def test_what_moves_before_a_run(project: Path, before: dict, identity: str, after: dict) -> None:
    folder = _run(project, **before)
    moved = prepare(folder, identity, "infer-tiny-infer")
    assert (moved.kept is not None) is after["kept"] and moved.restored is after["restored"]
    assert (folder / "report.md").exists() is not after["kept"]
    assert recorded_identity(folder) == identity  # what the folder's run is made of from now on


def test_a_changed_by_hand_run_is_not_taken_for_its_identity(project: Path) -> None:
    folder = _run(project, "aaaa")
    (folder / "submission.jsonl").write_text("typed by hand\n")  # `orchestrator infer --out-dir runs/tiny-infer`
    moved = prepare(folder, "bbbb", "infer-tiny-infer")
    assert moved.kept is None and (folder / "submission.jsonl").read_text() == "typed by hand\n"


def test_a_move_cut_short_is_finished_first(project: Path) -> None:
    folder = _run(project, "aaaa")
    moving = folder / "kept" / "aaaa.moving"
    moving.mkdir(parents=True)
    for name in (IDENTITY, "submission.jsonl"):  # cut after the first renames
        (folder / name).rename(moving / name)
    prepare(folder, "aaaa", "infer-tiny-infer")  # the next call: the move completed, then this run comes back
    assert not moving.exists()
    assert (folder / "submission.jsonl").is_file() and (folder / "trace.jsonl").is_file()
    assert not (folder / "kept" / "aaaa").exists()


def test_the_runs_by_name(project: Path) -> None:
    folder = _run(project, "aaaa1111")
    prepare(folder, "bbbb2222", "infer-tiny-infer")
    _run(project, "bbbb2222", answer="B")
    (project / "runs/tiny-answer/adapter").mkdir(parents=True)  # a training's folder is not a run
    assert [(r.name, r.current) for r in runs()] == [("tiny-infer", True), ("tiny-infer~aaaa1111", False)]
    assert run_named("tiny-infer~aaaa").folder == folder / "kept" / "aaaa1111"
    assert run_named("tiny-infer").folder == folder and run_named("tiny-answer") is None
