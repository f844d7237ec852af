"""Label corrections (`data.fixes`): a small YAML file applied whenever training data is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.core.common.errors import UserError
from orchestrator.core.data.competition import read_dataset
from orchestrator.core.data.fixes import apply_fixes, load_fixes
from orchestrator.core.data.sources import training_data
from orchestrator.core.recipes.loading import load_role

# p0: 1 question of 2 options (gold A); p1: 3 questions of 4 options (gold B, C, D); p2: 1 question
TRAIN = [
    {"id": "p0", "problem": "题目0", "questions": [{"question": "问0", "options": ["是", "否"], "answer": "A"}]},
    {"id": "p1", "problem": "题目1", "questions": [
        {"question": f"问1-{j}", "options": list("甲乙丙丁"), "answer": letter} for j, letter in enumerate("BCD")]},
    {"id": "p2", "problem": "题目2", "questions": [{"question": "问2", "options": ["对", "错"], "answer": "B"}]},
]


@pytest.fixture
def train(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in TRAIN), encoding="utf-8")
    return path


def fixes_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fixes.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# (fixes file, answers after by id#i, summary line after the path)
APPLIED = [
    pytest.param("", {"p0#0": "A", "p1#0": "B", "p1#1": "C", "p1#2": "D", "p2#0": "B"},
                 "0 answers corrected, 0 problems and 0 questions dropped", id="empty-file"),
    pytest.param("p1#0: a\n", {"p0#0": "A", "p1#0": "A", "p1#1": "C", "p1#2": "D", "p2#0": "B"},
                 "1 answer corrected, 0 problems and 0 questions dropped", id="lowercase-letter"),
    pytest.param("p2: drop\np1#1: drop\np1#2: B\n", {"p0#0": "A", "p1#0": "B", "p1#2": "B"},
                 "1 answer corrected, 1 problem and 1 question dropped", id="drops-keep-neighbours-ids"),
    pytest.param("p0#0: A  # already so\n", {"p0#0": "A", "p1#0": "B", "p1#1": "C", "p1#2": "D", "p2#0": "B"},
                 "0 answers corrected, 0 problems and 0 questions dropped (1 already had the fixed letter)",
                 id="same-letter-counted-apart"),
    pytest.param("p0#0: drop\n", {"p1#0": "B", "p1#1": "C", "p1#2": "D", "p2#0": "B"},
                 "0 answers corrected, 0 problems and 1 question dropped", id="last-question-takes-the-problem"),
]


@pytest.mark.parametrize("text, answers, line", APPLIED)
def test_fixes_applied(tmp_path, train, text, answers, line):
    path = fixes_file(tmp_path, text)
    fixed, summary = apply_fixes(read_dataset(train), load_fixes(path), path)
    assert {q.qid: q.answer for q in fixed.questions} == answers
    assert summary.line() == f"{path}: {line}"


# (fixes file, error lines after the path)
BAD = [
    pytest.param("p0#0: E\n", [":1: p0#0 offers AB, not E"], id="letter-not-offered"),
    pytest.param("p9: drop\n", [":1: no problem 'p9' in {train}"], id="no-such-problem"),
    pytest.param("p1#3: A\n", [":1: p1 has 3 questions (#0 to #2), not #3"], id="no-such-question"),
    pytest.param("p1: B\n", [":1: p1: a problem can only be dropped; correct a question as p1#i: B"], id="problem-letter"),
    pytest.param("p1#0: maybe\n", [":1: p1#0: 'maybe' is neither a letter A-G nor drop"], id="bad-value"),
    pytest.param("p1#x: A\n", [":1: 'p1#x' is not a problem id or a question ID#i (0-based)"], id="bad-key"),
    pytest.param("p1#0: A\n\np1#0: B\n", [":3: p1#0 is already fixed on line 1"], id="repeated"),
    pytest.param("p1#0: [A, B]\n", [":1: each entry is `ID: drop` or `ID#i: LETTER` on one line"], id="a-list"),
    pytest.param("- p1#0\n", [":1: a fixes file is a mapping such as `ID#0: B` or `ID: drop`"], id="not-a-mapping"),
    pytest.param("p1#0: A\np9: drop\np0#0: C\n", [":2: no problem 'p9' in {train}", ":3: p0#0 offers AB, not C"],
                 id="every-bad-line-at-once"),
]


@pytest.mark.parametrize("text, errors", BAD)
def test_bad_fixes_name_the_file_and_line(tmp_path, train, text, errors):
    path = fixes_file(tmp_path, text)
    with pytest.raises(UserError) as info:
        apply_fixes(read_dataset(train), load_fixes(path), path)
    assert info.value.lines == [f"{path}{e.format(train=train)}" for e in errors]


def test_missing_fixes_file(tmp_path):
    with pytest.raises(UserError, match=r"data.fixes: .*nope.yaml does not exist"):
        load_fixes(tmp_path / "nope.yaml")


def test_distill_and_dataset_apply_the_fixes_and_record_them(project: Path, cli):
    """The sample's train file with one answer corrected and one problem dropped."""
    train = read_dataset(project / "datasets/sample/train.jsonl")
    first, dropped = train.questions[0], train.problems[-1]
    other = next(letter for letter in first.letters if letter != first.answer)
    (project / "fixes.yaml").write_text(f"{first.qid}: {other}\n{dropped.id}: drop\n", encoding="utf-8")
    (project / "recipes" / "fixed.yaml").write_text("extends: pipeline.yaml\ndata:\n  fixes: fixes.yaml\n")

    code, out, err = cli("distill", "--pipeline", "recipes/fixed.yaml")
    assert code == 0, err
    summary = "1 answer corrected, 1 problem and 0 questions dropped"
    assert f"fixes.yaml: {summary}" in err
    kept = len(train.questions) - len(dropped.questions)
    assert out.splitlines()[0].split() == ["questions", str(kept)]

    code, out, err = cli("dataset", "evaluate", "--pipeline", "recipes/fixed.yaml")
    assert code == 0, err
    assert f"fixes.yaml: {summary}" in err
    rows = json.loads((project / "datasets/train_evaluate_instruct.json").read_text(encoding="utf-8"))
    assert len(rows) == kept and rows[0]["output"] == f"答案是：{other}"
    source = json.loads((project / "datasets/train_evaluate_instruct.sources.json").read_text(encoding="utf-8"))
    assert source["fixes"]["path"].endswith("fixes.yaml") and source["fixes"]["corrected"] == 1
    assert len(source["fixes"]["sha256"]) == 64
    # what a training run's manifest records it was built from
    assert training_data(load_role("evaluate", "recipes/evaluate.yaml").recipe)["dataset"] == source


def test_a_bad_fix_stops_distill_with_one_line(project: Path, cli):
    (project / "fixes.yaml").write_text("no_such_problem: drop\n", encoding="utf-8")
    code, _out, err = cli("distill", "--set", "data.fixes=fixes.yaml")
    assert code == 2
    assert err.strip().endswith("fixes.yaml:1: no problem 'no_such_problem' in "
                                f"{project / 'datasets/sample/train.jsonl'}")
