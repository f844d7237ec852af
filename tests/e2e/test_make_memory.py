"""The project remembers its settings (.orchestrator/state.yaml): the second-day walk of the issue,
as a user types it: `make ... RECIPE=tiny TRAIN=...` one day, a plain `make all` and a hand-typed
`orchestrator distill` the next, on the same recipes and data; `make -n` writes nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import make, make_train, with_makefile

OWN = ("RECIPE=tiny", "TRAIN=data/train.jsonl", "TEST=data/test.jsonl", "GOLD=data/gold.jsonl",
       "TEACHER_URL=http://127.0.0.1:9/v1", "TEACHER_MODEL=mine", "LIMIT=3")


def own_project(project: Path) -> Path:
    with_makefile(project)
    (project / "data").mkdir()
    for name in ("train", "test", "gold"):
        make_train(project / f"data/{name}.jsonl", problems=2)
    return project


def files(project: Path) -> list[str]:
    return sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if ".venv" not in p.parts)


def test_make_n_writes_nothing(project: Path) -> None:
    own_project(project)
    before = files(project)
    done = make(project, "-n", "all", *OWN, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("$ orchestrator distill --pipeline recipes/tiny-pipeline.yaml --set data.train=data/train.jsonl "
            "--set data.test=data/test.jsonl --set data.gold=data/gold.jsonl") in done.stdout
    assert "--limit 30" in done.stdout  # LIMIT=3: the first 30 training problems
    assert "$ orchestrator infer --out-dir runs/tiny-infer-test " in done.stdout  # named by its test file
    assert files(project) == before


def test_the_second_day(project: Path) -> None:
    own_project(project)
    # day one: a call that fails at the teacher (nothing listens on port 9) has kept its values
    first = make(project, "all", *OWN, timeout=300)
    assert first.returncode != 0 and "Traceback" not in first.stderr
    state = (project / ".orchestrator/state.yaml").read_text()
    assert "RECIPE: tiny" in state and "TRAIN: data/train.jsonl" in state

    # day two: a plain `make all` works on the same recipes and data
    plan = make(project, "-n", "all", timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert ("RECIPE=tiny TRAIN=data/train.jsonl TEST=data/test.jsonl GOLD=data/gold.jsonl "
            "TEACHER_URL=http://127.0.0.1:9/v1 TEACHER_MODEL=mine LIMIT=3 (kept in .orchestrator/state.yaml") in plan.stderr
    assert "recipes/tiny-answer.yaml" in plan.stdout and "recipes/answer.yaml" not in plan.stdout
    assert "datasets/sample" not in plan.stdout
    # and `make package`, with the kept pipeline, the tiny models
    plan = make(project, "-n", "package", timeout=300)
    assert "$ orchestrator merge answer --recipe recipes/tiny-answer.yaml" in plan.stdout

    # a hand-typed distill reads the kept data (and says where it came from)
    typed = subprocess.run([str(project / ".venv/bin/orchestrator"), "distill"], cwd=project, capture_output=True,
                           text=True, timeout=300, env={"ORCHESTRATOR_HOME": str(project), "PATH": "/usr/bin:/bin"})
    assert "[distill] data.train = data/train.jsonl (from TRAIN in .orchestrator/state.yaml)" in typed.stderr
    assert "[distill] --limit 30 (from LIMIT in .orchestrator/state.yaml, times 10)" in typed.stderr

    # the demo reads the sample and changes nothing kept; make clean forgets it
    demo = make(project, "-n", "demo", timeout=300)
    assert demo.returncode == 0 and "--set" not in demo.stdout and "kept in" not in demo.stderr
    assert (project / ".orchestrator/state.yaml").read_text() == state
    make(project, "clean")
    assert not (project / ".orchestrator").exists()


def test_make_q_answers_by_its_exit_code_and_writes_nothing(project: Path) -> None:
    """make -q asks the planner (--question): 1 when a stage would run, silent; an error is 2 with
    its line (0 when none would: tests/stages/test_run.py, on a settled project)."""
    own_project(project)
    before = files(project)
    asked = make(project, "-q", "all", *OWN, timeout=300)
    assert (asked.returncode, asked.stdout, asked.stderr) == (1, "", "")
    refused = make(project, "-q", "all", "LIMIT=x", timeout=300)
    assert refused.returncode == 2 and "Error: LIMIT=x: a number of problems" in refused.stderr
    assert files(project) == before
