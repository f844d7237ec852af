"""Submissions read as the competition reads them: every departure a finding, never a refusal;
`data check SUBMISSION --against TEST` says whether a file can be uploaded."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from orchestrator.core.common.errors import UserError
from orchestrator.core.data.competition import read_dataset
from orchestrator.core.data.submission import match, read_submission
from orchestrator.stages.score import score

GOLD = {"p0": "A", "p1": "BC", "p2": "DAB"}  # 6 questions, 4 options each


def rows(answers: dict[str, str] = GOLD) -> list[dict]:
    return [{"problem": f"题目{pid}", "questions": [{"question": f"问题{pid}-{j}", "options": list("甲乙丙丁"),
                                                   "answer": letter} for j, letter in enumerate(letters)],
             "id": pid} for pid, letters in answers.items()]


def dump(path: Path, lines: list, newline: bool = True) -> Path:
    text = "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines)
    path.write_text(text + ("\n" if newline else ""), encoding="utf-8")
    return path


def answer(r: list[dict], pid: str, j: int, value) -> list[dict]:
    r = copy.deepcopy(r)
    q = next(x for x in r if x["id"] == pid)["questions"][j]
    if value is KeyError:
        del q["answer"]
    else:
        q["answer"] = value
    return r


def edit(r: list[dict], fn) -> list[dict]:
    r = copy.deepcopy(r)
    fn(r)
    return r


G = rows()
# (submission lines, trailing newline, correct of 6, kinds of findings in order)
CASES = [
    pytest.param(G, True, 6, [], id="all-right"),
    pytest.param(answer(G, "p0", 0, " a "), True, 6, [], id="lowercase-spaced-letter-counts"),
    pytest.param(answer(G, "p1", 1, "E"), True, 5, ["not_offered"], id="letter-not-offered"),
    pytest.param(answer(G, "p1", 1, "AB"), True, 5, ["not_offered"], id="two-letters"),
    pytest.param(answer(G, "p1", 1, None), True, 5, ["no_answer"], id="null"),
    pytest.param(answer(G, "p1", 1, KeyError), True, 5, ["no_answer"], id="no-answer-key"),
    pytest.param(answer(G, "p1", 1, 2), True, 5, ["no_answer"], id="number-not-letter"),
    pytest.param(edit(G, lambda r: r[1]["questions"].pop()), True, 5, ["missing_question"], id="question-missing"),
    pytest.param(edit(G, lambda r: r[1]["questions"].append(dict(r[1]["questions"][0]))), True, 6,
                 ["extra_question"], id="extra-question-not-counted"),
    pytest.param(G[:2], True, 3, ["missing_problem"], id="problem-missing"),
    pytest.param([*G, rows({"p9": "A"})[0]], True, 6, ["extra_problem"], id="extra-problem-not-counted"),
    pytest.param([*G, answer(G, "p0", 0, "B")[0]], True, 6, ["repeated_problem"], id="repeated-first-counts"),
    pytest.param([G[2], G[0], G[1]], True, 6, ["order"], id="other-order"),
    pytest.param(edit(G, lambda r: r[0]["questions"][0].update(model_letter="C")), True, 6, ["extra_keys"],
                 id="extra-keys-ignored"),
    pytest.param(G, False, 6, ["no_final_newline"], id="no-trailing-newline"),
    pytest.param([{"id": r["id"], "questions": [{"answer": q["answer"]} for q in r["questions"]]} for r in G],
                 True, 6, [], id="minimal-form"),
    pytest.param(edit(G, lambda r: r[2]["questions"][1].update(question="改过的问题")), True, 6, ["question_text"],
                 id="reworded-question-warns"),
    pytest.param(edit(G, lambda r: r[0].update(problem="改过的题目")), True, 6, ["problem_text"],
                 id="reworded-problem-warns"),
]


@pytest.mark.parametrize("lines, newline, correct, kinds", CASES)
def test_every_departure_is_a_finding(tmp_path, lines, newline, correct, kinds):
    gold = dump(tmp_path / "gold.jsonl", G)
    submission = dump(tmp_path / "s.jsonl", lines, newline)
    result = score(submission, gold)
    assert (result.questions, result.correct) == (6, correct)
    assert [f.kind for f in result.findings] == kinds
    assert all(str(submission) in f.text or str(gold) in f.text for f in result.findings)


def test_findings_name_the_line_and_question(tmp_path):
    gold = read_dataset(dump(tmp_path / "gold.jsonl", G))
    submission = read_submission(dump(tmp_path / "s.jsonl", answer(G, "p1", 1, "E")))
    (finding,) = match(submission, gold).findings
    assert finding.text == f"{submission.path}:2: questions[1]: answer 'E' is not one of the offered letters ABCD"


NOT_A_SUBMISSION = [
    pytest.param(["not json"], "not valid JSON (Expecting value)", id="not-json"),
    pytest.param([[1, 2]], "not a submission line (a JSON object with an id)", id="not-an-object"),
    pytest.param([{"questions": []}], "not a submission line (a JSON object with an id)", id="no-id"),
    pytest.param([{"id": "p0", "questions": "A"}], "p0: questions must be a list", id="questions-not-a-list"),
]


@pytest.mark.parametrize("lines, reason", NOT_A_SUBMISSION)
def test_only_a_file_out_of_format_is_refused(tmp_path, cli, lines, reason):
    gold = dump(tmp_path / "gold.jsonl", G)
    submission = dump(tmp_path / "s.jsonl", [G[0], *lines])
    code, _out, err = cli("score", submission, gold)
    assert code == 2
    assert err.splitlines() == [
        f"Error: {submission}:2: {reason}",
        f"Error: {submission} is not in the competition format (one JSON object per line with id and questions)",
    ]


def test_a_file_of_another_format_is_named_in_a_few_lines(tmp_path, cli):
    gold = dump(tmp_path / "gold.jsonl", G)
    alpaca = dump(tmp_path / "alpaca.jsonl", [{"instruction": "问", "input": "", "output": "A"}] * 25)
    code, _out, err = cli("score", alpaca, gold)
    assert code == 2
    last = f"Error: {alpaca} is not in the competition format (one JSON object per line with id and questions)"
    assert err.splitlines()[10:] == ["Error: ... and 15 more such lines", last]


def test_score_lists_each_case_on_stderr_and_sums_them_up(tmp_path, cli):
    gold = dump(tmp_path / "gold.jsonl", G)
    lines = answer(answer(G[:2], "p0", 0, "E"), "p1", 0, None)
    submission = dump(tmp_path / "s.jsonl", lines, newline=False)
    code, out, err = cli("score", submission, gold)
    assert code == 0, err
    assert err.splitlines() == [
        f"scored: {submission}:1: questions[0]: answer 'E' is not one of the offered letters ABCD",
        f"scored: {submission}:2: questions[0]: no answer (null)",
        f"warning: {submission}: no newline after the last line (read anyway)",
        "scored: 1 problems are missing from the submission (p2); "
        "`orchestrator data check SUBMISSION --against TEST` lists them all",
    ]
    assert "by question                 1       6    0.1667" in out
    for line in ["1 answers not offered by the question (counted wrong)",
                 "1 questions without an answer (counted wrong)",
                 "1 problems missing (their questions counted wrong)", "no newline at the end of the file"]:
        assert line in out.splitlines()


def test_gold_letter_not_offered_is_kept_and_listed(tmp_path):
    """read_gold keeps a gold letter its question does not offer (no answer can match it) and names
    it; any other reader of the file still refuses it."""
    from orchestrator.core.data.competition import read_dataset
    from orchestrator.core.data.submission import gold_findings, read_gold

    gold = dump(tmp_path / "gold.jsonl", answer(G, "p1", 1, "E"))
    read = read_gold(gold)
    assert [q.answer for q in read.questions if q.qid == "p1#1"] == ["E"]
    assert [f.text for f in gold_findings(read)] == [
        f"{gold}:2: p1 questions[1].answer 'E' is not one of the offered letters ABCD: counted, never right"]
    with pytest.raises(UserError, match=r"gold.jsonl:2: questions\[1\].answer 'E' is not one of the offered letters"):
        read_dataset(gold)


def test_merged_options_split_in_gold_and_submission_alike(tmp_path):
    """The gold answers C on a question whose B option swallowed C and D: counted, not refused."""
    merged = [{"id": "m0", "problem": "哪座城市?", "questions": [
        {"question": "选择题 1：\n哪个?", "options": ["北京", "上海\nC.广州\nD. 深圳"], "answer": "C"}]}]
    gold = dump(tmp_path / "gold.jsonl", merged)
    result = score(dump(tmp_path / "s.jsonl", merged), gold)
    assert (result.correct, result.findings) == (1, [])


def without_answers(r: list[dict]) -> list[dict]:
    return edit(r, lambda rs: [q.pop("answer") for x in rs for q in x["questions"]])


CHECKS = [
    pytest.param(G, 0, [], id="uploadable"),
    pytest.param(edit(G, lambda r: r[0].update(problem="改过的题目")), 0, ["warning"], id="warnings-only"),
    pytest.param(G[:2], 2, ["problem"], id="missing-problem"),
    pytest.param([G[1], G[0], G[2]], 2, ["problem"], id="other-order"),
    pytest.param(answer(G, "p2", 2, None), 2, ["problem"], id="a-question-unanswered"),
    pytest.param(answer(G, "p2", 2, "G"), 2, ["problem"], id="a-letter-not-offered"),
    pytest.param(edit(G, lambda r: r[2]["questions"].pop()), 2, ["problem"], id="fewer-questions"),
]


@pytest.mark.parametrize("lines, code, prefixes", CHECKS)
def test_data_check_against_the_test_file(tmp_path, cli, lines, code, prefixes):
    test = dump(tmp_path / "test.jsonl", without_answers(G))
    submission = dump(tmp_path / "s.jsonl", lines)
    got, out, err = cli("data", "check", submission, "--against", test)
    assert got == code
    lines_err = [line for line in err.splitlines() if not line.startswith("Error:")]
    assert [line.split(":")[0] for line in lines_err] == prefixes
    if code == 0:
        assert out.startswith(f"{submission}: ready to upload for {test}: 6 questions answered")
    else:
        assert err.splitlines()[-1].startswith(f"Error: {submission} cannot be uploaded for {test}: 1 ")
