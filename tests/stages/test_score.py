"""Scoring a submission against gold, and the report built from an inference trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.core.common.errors import UserError
from orchestrator.stages.score import percentile, score

# problem id -> gold letters of its questions
GOLD = {"p0": "A", "p1": "BC", "p2": "DAB"}


def write(path: Path, answers: dict[str, str], **changed: str | None) -> Path:
    """A competition file with `answers` per problem, then `changed` answers by question id (p1_0)."""
    lines = []
    for pid, letters in answers.items():
        questions = []
        for j, letter in enumerate(letters):
            letter = changed.get(f"{pid}_{j}", letter)
            questions.append({"question": f"问题{pid}-{j}", "options": list("甲乙丙丁"), "answer": letter})
        lines.append(json.dumps({"id": pid, "problem": f"题目{pid}", "questions": questions}, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# (answers changed from gold, correct questions, correct problems, unanswered)
CASES = [
    pytest.param({}, 6, 3, 0, id="all-right"),
    pytest.param({"p1_1": "A"}, 5, 2, 0, id="one-wrong"),
    pytest.param({"p0_0": None}, 5, 2, 1, id="null-counts-wrong"),
    pytest.param({"p0_0": "B", "p2_0": "A", "p2_2": "C"}, 3, 1, 0, id="three-wrong-two-problems"),
    pytest.param({"p0_0": "B", "p1_0": "A", "p2_1": "B"}, 3, 0, 0, id="every-problem-wrong"),
]


@pytest.mark.parametrize("changed, correct, problems_correct, unanswered", CASES)
def test_accuracy_by_question_and_by_problem(tmp_path, changed, correct, problems_correct, unanswered):
    gold = write(tmp_path / "gold.jsonl", GOLD)
    result = score(write(tmp_path / "submission.jsonl", GOLD, **changed), gold)
    counts = (result.questions, result.correct, result.problems, result.problems_correct)
    assert counts == (6, correct, 3, problems_correct)
    assert result.accuracy == correct / 6 and result.problem_accuracy == problems_correct / 3
    assert result.unanswered == unanswered
    assert result.report is None and not (tmp_path / "report.md").exists()  # no trace, no report


def _record(qid: str, answer: str | None, final: str | None, source: str = "evaluate", errors=(),
            answer_latency=(0.5,), evaluate_latency: float | None = 1.0) -> dict:
    return {
        "key": f"k-{qid}", "id": qid, "status": "done", "final": final, "source": source,
        "answer": {"letter": answer,
                   "samples": [{"text": "...", "letter": answer, "latency": t} for t in answer_latency]},
        "evaluate": None if evaluate_latency is None else {"text": "...", "letter": final, "latency": evaluate_latency},
        "errors": list(errors),
    }


def test_report_from_the_trace(tmp_path, cli):
    gold = write(tmp_path / "gold.jsonl", GOLD)
    out = tmp_path / "run"
    out.mkdir()
    # final answers: p1#1 and p2#2 wrong
    submission = write(out / "submission.jsonl", GOLD, p1_1="A", p2_2="C")
    trace = [
        _record("p0#0", "A", "A"),  # kept right
        _record("p1#0", "C", "B", errors=[{"kind": "disagreement", "stage": "evaluate"}]),  # fixed
        _record("p1#1", "C", "A", errors=[{"kind": "disagreement", "stage": "evaluate"}]),  # broken
        _record("p2#0", "A", "D", errors=[{"kind": "disagreement", "stage": "evaluate"}]),  # fixed
        _record("p2#1", "A", "A", answer_latency=(0.1, 0.2, 0.3)),  # kept right, three votes
        _record("p2#2", "C", "C", source="answer_fallback", evaluate_latency=None,
                errors=[{"kind": "api", "stage": "evaluate"}]),  # kept wrong
        _record("p2#2", "D", "D"),  # an older line of the same question is overridden by the last
    ]
    trace.append(trace.pop(-2))
    (out / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trace), encoding="utf-8")

    result = score(submission, gold)
    report = result.report
    assert (result.correct, result.problems_correct) == (4, 1)
    assert (report.traced, report.answer_correct, report.fixed, report.broken) == (6, 3, 2, 1)
    assert report.errors == {("disagreement", "evaluate"): 3, ("api", "evaluate"): 1}
    assert report.sources == {"evaluate": 5, "answer_fallback": 1}
    assert sorted(report.latency["answer"]) == [0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert report.latency["evaluate"] == [1.0] * 5

    markdown = (out / "report.md").read_text(encoding="utf-8")
    for line in ["| by question | 4 | 6 | 0.6667 |", "| by problem | 1 | 3 | 0.3333 |",
                 "| Answer Agent alone | 3 | 6 | 0.5000 |", "- fixed 2 answers", "- broke 1 answers",
                 "| disagreement | evaluate | 3 |", "| api | evaluate | 1 |",
                 "| answer | 8 | 0.500 | 0.500 | 0.500 |", "| evaluate | 5 | 1.000 | 1.000 | 1.000 |",
                 "![accuracy, Evaluate Agent effect, errors and latency](report.png)"]:
        assert line in markdown
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code, stdout, err = cli("score", submission, gold, "--out-dir", tmp_path / "elsewhere")
    assert code == 0, err
    assert "by question                 4       6    0.6667" in stdout
    assert "Evaluate Agent fixed 2, broke 1" in stdout
    assert (tmp_path / "elsewhere" / "report.md").exists() and (tmp_path / "elsewhere" / "report.png").exists()


# p0#0's gold is A: (the Answer Agent's letter, the final letter, whose it is) -> (fixed, broke, fallback right)
WHOSE = [
    pytest.param("B", "A", "evaluate", (1, 0, 0), id="evaluate-fixed"),
    pytest.param("A", "B", "evaluate", (0, 1, 0), id="evaluate-broke"),
    pytest.param(None, "A", "evaluate", (1, 0, 0), id="evaluate-read-what-answer-did-not-say"),
    pytest.param(None, "A", "fallback", (0, 0, 1), id="fallback-right-is-not-the-evaluate-agent"),
    pytest.param(None, "B", "fallback", (0, 0, 0), id="fallback-wrong"),
    pytest.param("A", "A", "answer_fallback", (0, 0, 0), id="answer-letter-kept"),
]


@pytest.mark.parametrize("answer, final, source, counts", WHOSE)
def test_only_the_evaluate_agents_own_letters_count_as_its_fixes(tmp_path, cli, answer, final, source, counts):
    gold = write(tmp_path / "gold.jsonl", {"p0": "A"})
    out = tmp_path / "run"
    out.mkdir()
    submission = write(out / "submission.jsonl", {"p0": final})
    evaluate_latency = 1.0 if source == "evaluate" else None
    record = _record("p0#0", answer, final, source=source, evaluate_latency=evaluate_latency)
    (out / "trace.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    report = score(submission, gold).report
    assert (report.fixed, report.broken, report.fallback_right) == counts
    code, stdout, err = cli("score", submission, gold)
    assert code == 0, err
    assert f"Evaluate Agent fixed {counts[0]}, broke {counts[1]}" in stdout
    markdown = (out / "report.md").read_text(encoding="utf-8")
    said = f"the fallback letter (no answer read from either agent) was right for {counts[2]} of 1"
    assert (f"fallback letter (no answer read) right {counts[2]} of 1" in stdout) == (source == "fallback")
    assert (said in markdown) == (source == "fallback")


def test_an_explicit_trace_must_exist(tmp_path):
    gold = write(tmp_path / "gold.jsonl", GOLD)
    with pytest.raises(UserError, match="--trace .*nope.jsonl: no such file"):
        score(gold, gold, trace=tmp_path / "nope.jsonl")


MISMATCHES = [
    pytest.param({"p0": "A", "p1": "BC", "p9": "A"}, 3, ["extra_problem", "missing_problem"], id="other-problem"),
    pytest.param({"p0": "A", "p1": "B", "p2": "DAB"}, 5, ["missing_question"], id="question-missing"),
    pytest.param({"p0": "A", "p1": "BC", "p2": "DABAA"}, 6, ["extra_question", "extra_question"], id="extra-questions"),
    pytest.param({f"x{i}": "A" for i in range(5)}, 0, ["extra_problem"] * 5 + ["missing_problem"] * 3, id="nothing-shared"),
]


@pytest.mark.parametrize("answers, correct, kinds", MISMATCHES)
def test_mismatched_ids_are_scored_not_refused(tmp_path, cli, answers, correct, kinds):
    gold = write(tmp_path / "gold.jsonl", GOLD)
    submission = write(tmp_path / "submission.jsonl", answers)
    result = score(submission, gold)
    assert (result.questions, result.correct, [f.kind for f in result.findings]) == (6, correct, kinds)
    code, _out, err = cli("score", submission, gold)
    # each finding a line, but the missing problems one line together
    assert code == 0 and len(err.splitlines()) == len([k for k in kinds if k != "missing_problem"]) + \
        ("missing_problem" in kinds)


def test_missing_problems_are_one_line_with_the_first_ids(tmp_path, cli):
    gold = write(tmp_path / "gold.jsonl", {f"p{i}": "A" for i in range(8)})
    submission = write(tmp_path / "submission.jsonl", {"p0": "A"})
    code, out, err = cli("score", submission, gold)
    assert code == 0, err
    assert err.splitlines() == ["scored: 7 problems are missing from the submission (p1, p2, p3, p4, p5, ...); "
                                "`orchestrator data check SUBMISSION --against TEST` lists them all"]
    assert "7 problems missing (their questions counted wrong)" in out


def test_gold_letter_not_offered_is_counted_never_right(tmp_path, cli):
    """A slip in hand-made labels ('E' of four options) blocks nothing: the question counts, is
    never right, and is named with file, line and question."""
    gold = write(tmp_path / "gold.jsonl", GOLD, p1_1="E")
    submission = write(tmp_path / "submission.jsonl", GOLD, p1_1="B")
    result = score(submission, gold)
    assert (result.questions, result.correct, result.problems_correct) == (6, 5, 2)
    code, out, err = cli("score", submission, gold)
    assert code == 0, err
    named = f"scored: {gold}:2: p1 questions[1].answer 'E' is not one of the offered letters ABCD: counted, never right"
    assert named in err.splitlines()
    assert "1 gold answers that are not an offered letter (counted, never right)" in out.splitlines()


def test_both_files_typed_need_no_project(tmp_path, cli, monkeypatch):
    """A submission and a gold file scored from a folder with no recipes in or above it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ORCHESTRATOR_HOME", raising=False)
    gold = write(tmp_path / "gold.jsonl", GOLD)
    code, out, err = cli("score", write(tmp_path / "s.jsonl", GOLD, p1_1="A"), gold, "--out-dir", tmp_path / "out")
    assert (code, err) == (0, "")
    assert "by question                 5       6" in out


def test_gold_needs_every_answer(tmp_path, cli):
    gold = write(tmp_path / "gold.jsonl", GOLD, p1_1=None)
    code, out, err = cli("score", write(tmp_path / "s.jsonl", GOLD), gold)
    assert (code, err) == (2, f"Error: {gold}: 1 questions have no answer (p1#1); a gold file needs all\n")


@pytest.mark.parametrize("values, p, expected", [
    ([], 50, None), ([3.0], 99, 3.0), (list(range(1, 11)), 50, 5), (list(range(1, 11)), 90, 9),
    (list(range(1, 11)), 99, 10), ([5, 1, 4, 2, 3], 50, 3),
])
def test_percentile_is_nearest_rank(values, p, expected):
    assert percentile(values, p) == expected


def test_subset_scores_only_the_submitted_problems(tmp_path, cli):
    """An `infer --limit` run: whole problems of the gold file, scored on their own."""
    gold = write(tmp_path / "gold.jsonl", GOLD)
    submission = write(tmp_path / "submission.jsonl", {"p0": "A", "p1": "BD"})  # p2 not answered at all
    code, out, err = cli("score", submission, gold, "--subset")
    assert code == 0, err
    rows = {" ".join(line.split()[:2]): line.split()[2:] for line in out.splitlines() if line.startswith("by ")}
    assert rows["by question"] == ["2", "3", "0.6667"]
    assert rows["by problem"] == ["1", "2", "0.5000"]


def test_a_limited_run_is_scored_as_a_subset_by_itself(tmp_path, cli):
    """run.json of `infer --limit 2` beside the submission: no --subset needed, and it says so."""
    gold = write(tmp_path / "gold.jsonl", GOLD)
    submission = write(tmp_path / "submission.jsonl", {"p0": "A", "p1": "BD"})
    (tmp_path / "run.json").write_text(json.dumps({"input": "test.jsonl", "limit": 2}), encoding="utf-8")
    code, out, err = cli("score", submission, gold)
    assert code == 0, err
    assert "by question" in out and out.split("by question")[1].split()[:2] == ["2", "3"]
    assert err.splitlines() == ["scored: only the submitted problems, as a subset: the run answered the first 2 "
                                "(infer --limit 2, in its run.json)"]


def test_gold_from_the_pipeline_recipe_is_named(project, cli):
    """No GOLD argument: data.gold of the pipeline recipe (make passes GOLD as --set data.gold=)."""
    write(project / "gold.jsonl", GOLD)
    submission = write(project / "submission.jsonl", GOLD)
    code, out, err = cli("score", submission, "--set", "data.gold=gold.jsonl")
    assert code == 0, err
    assert err.splitlines() == ["[score] data.gold = gold.jsonl (from --set)"]
    assert out.split("by question")[1].split()[:2] == ["6", "6"]
    code, out, err = cli("score", submission, "--set", "data.gold=null")
    assert (code, err) == (2, "Error: --set: data.gold is null: name the gold file (score SUBMISSION GOLD)\n")


def test_one_question_is_not_questions(tmp_path):
    gold = write(tmp_path / "gold.jsonl", GOLD)
    result = score(write(tmp_path / "submission.jsonl", {"p1": "BC", "p2": "DAB"}), gold)
    assert [f.text for f in result.findings] == [f"{gold}:1: p0 (1 question) is missing from the submission"]


def test_out_dir_without_a_trace_reports_the_submission_alone(tmp_path, cli):
    gold = write(tmp_path / "gold.jsonl", GOLD)
    code, out, err = cli("score", write(tmp_path / "s.jsonl", GOLD, p1_1="A"), gold, "--out-dir", tmp_path / "out")
    assert code == 0, err
    report = (tmp_path / "out/report.md").read_text(encoding="utf-8")
    assert ("No trace (trace.jsonl beside the submission, or --trace): what each agent did, the errors and the "
            "latency are left out.") in report
    assert "| by question | 5 | 6 | 0.8333 |" in report.replace("  ", " ") or "0.8333" in report
    assert "Evaluate Agent" not in report and (tmp_path / "out/report.png").stat().st_size > 0
    assert f"report: {tmp_path}/out/report.md" in out
