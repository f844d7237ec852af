"""The README's "Your own data" section, run as written in a temporary project: a synthetic
training file, test and gold files, a loopback teacher; it ends with a scored submission."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from fake_openai import FailPrompts, FakeOpenAI
from helpers import ADAPTER_ONLY, REPO, make_train, with_makefile, write_competition

from orchestrator.core.data.competition import letter_counts, read_dataset

pytestmark = pytest.mark.slow

README_URL = "http://127.0.0.1:8000/v1"


def own_data_section() -> tuple[str, str]:
    """The section's bash block, but its last line (the GPU run), split before the recipe is written."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Your own data\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the section has a bash block"
    lines = block.group(1).rstrip("\n").split("\n")
    assert "GPU machine" in lines[-1]
    script = "\n".join(lines[:-1]) + "\n"
    cut = script.index("cat > recipes/my-pipeline.yaml")
    return script[:cut], script[cut:]


def bash(project: Path, script: str, url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ORCHESTRATOR_HOME": str(project), "PATH": f"{project / '.venv/bin'}:{os.environ['PATH']}"}
    env.pop("DEEPSEEK_API_KEY", None)
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script.replace(README_URL, url)], cwd=project,
                          capture_output=True, text=True, timeout=1800, env=env)


def test_own_data_to_a_scored_submission(tiny_project: Path) -> None:
    project = with_makefile(tiny_project)
    (project / "data").mkdir()
    train = make_train(project / "data/train.jsonl", problems=36, per_problem=1)  # LIMIT=3 distils the first 30
    prior, _ = next(iter(letter_counts(read_dataset(train).questions).items()))
    ids = write_competition(project / "data/test.jsonl", [[4, 4], [4], [3, 4], [4], [4, 4]])
    test_rows = [json.loads(line) for line in (project / "data/test.jsonl").read_text().splitlines()]
    for row in test_rows:
        for q in row["questions"]:
            q["answer"] = "A"
    (project / "data/gold.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in test_rows))

    # a teacher that always fails one question, which the tiny pipeline recipe allows
    tiny = project / "recipes/tiny-pipeline.yaml"
    tiny.write_text(tiny.read_text(encoding="utf-8") + "teacher:\n  max_failed: 1\n  max_retries: 0\n", encoding="utf-8")
    # the own data is the subject, not training: 10 steps a model (the tiny recipes train 60)
    answer = project / "recipes/tiny-answer.yaml"
    # and served as base + adapter (one server for both, no merge: merging is not the subject either)
    answer.write_text(answer.read_text(encoding="utf-8").replace("max_steps: 60", "max_steps: 10", 1)
                      .replace("save_steps: 30", "save_steps: 10", 1).replace(*ADAPTER_ONLY), encoding="utf-8")
    first, second = own_data_section()
    with FakeOpenAI(faults=FailPrompts("问题 5-0?", "500")) as teacher:
        done = bash(project, first, teacher.url)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        asked = teacher.completions
        assert asked == 30  # LIMIT=3: the first 30 training problems, from the loopback teacher, no key needed
        err = done.stderr
        assert (f"Warning: 1 of 30 questions failed (teacher.max_failed 1 allows 1): they are left out of the "
                f"datasets, listed in {project}/runs/distill/errors.jsonl, and asked again by the next distill") in err
        assert "t5#0" in (project / "runs/distill/errors.jsonl").read_text(encoding="utf-8")
        assert "[distill] --limit 30: the first 30 of 36 training problems (30 of 36 questions)" in err
        # the 6 problems past the limit, and the one question that failed (asked again too)
        assert re.search(r"a full run \(no --limit\) would ask +7 more questions: 7 requests or more", done.stdout)
        assert "[distill] data.train = data/train.jsonl (from TRAIN)" in err
        assert f"teacher.base_url = '{teacher.url}'  (from TEACHER_URL)" in err
        assert f"[infer] fallback: {prior}, the most frequent gold letter of {project}/data/train.jsonl" in err
        assert "scored: only the submitted problems, as a subset: the run answered the first 3" in err
        report = project / "runs/tiny-infer-test/report.md"  # named by the test file: a demo's run stays
        assert report.exists() and "by question" in done.stdout
        # the submission: 3 problems, every question answered; a question without a letter got the prior
        submission = [json.loads(line) for line in (project / "runs/tiny-infer-test/submission.jsonl").read_text().splitlines()]
        assert [r["id"] for r in submission] == ["p000", "p001", "p002"]
        trace = [json.loads(line) for line in (project / "runs/tiny-infer-test/trace.jsonl").read_text().splitlines()]
        finals = {r["id"]: r["final"] for r in trace}
        assert all(r["final"] == prior for r in trace if r["source"] == "fallback")
        assert set(finals) == set(ids[:5]) and all(finals.values())
        # the bare `make package RECIPE=tiny`: the own data stay in force, nothing retrained
        assert "[run] TRAIN=data/train.jsonl TEST=data/test.jsonl GOLD=data/gold.jsonl" in err
        assert "(kept in .orchestrator/state.yaml" in err
        assert done.stdout.count("orchestrator distill") == done.stdout.count("orchestrator train answer") == 1
        assert (f"[package] fallback: {prior}, the most frequent gold letter of {project}/data/train.jsonl"
                in err), err[-3000:]
        frozen = (project / "runs/tiny-image/recipes/pipeline.yaml").read_text(encoding="utf-8")
        assert f"fallback: {prior}" in frozen
        assert not (project / "runs/tiny-infer").exists()

        # re-saved unchanged: the content says it is current
        later = time.time() + 60
        os.utime(project / "recipes/tiny-answer.yaml", (later, later))
        again = bash(project, first.split("\n", 2)[2], teacher.url)  # the make line alone
        assert again.returncode == 0, again.stderr[-4000:]
        assert "up to date" in again.stdout and "launching" not in again.stderr

        # the user's own pipeline recipe: the same files and teacher, nothing trained again; the
        # failed question is asked again (1 + teacher.max_retries requests), fails, and is allowed
        mine = bash(project, second, teacher.url)
        assert mine.returncode == 0, mine.stderr[-4000:]
        assert "data.train = data/train.jsonl (from recipes/my-pipeline.yaml)" in mine.stderr
        assert "Warning: 1 of 30 questions failed (teacher.max_failed 0.05 allows 1)" in mine.stderr
        assert "launching" not in mine.stderr and teacher.completions == asked + 7
        assert f"[infer] fallback: {prior}, the most frequent gold letter of {project}/data/train.jsonl" in mine.stderr
