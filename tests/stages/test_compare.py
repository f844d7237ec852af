"""Comparing infer runs: synthetic run folders with known answers, and real `infer` runs
against the loopback server."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, default_reply
from helpers import marker, qids, write_competition, write_file

from orchestrator.core.common.stats import mcnemar_exact
from orchestrator.core.data.submission import summarise
from orchestrator.stages.compare import compare, table

# questions per problem of the real test file (143 x1, 90 x2, 63 x3, 204 x4 = 1,328)
TEST_SHAPE = [1] * 143 + [2] * 90 + [3] * 63 + [4] * 204


def gold_letters(shape: list[int]) -> dict[str, str]:
    return {q: "A" for q in qids(shape)}


def make_run(directory: Path, shape: list[int], wrong: set[str], trace: dict[str, str | None] | None = None,
             record: dict | None = None, fallback: set[str] = frozenset()) -> Path:
    """A run folder whose final answer is gold (A) except on `wrong` (B); `trace` gives the
    Answer Agent's letter per question, the final one the Evaluate Agent's but on `fallback`."""
    write_file(directory / "submission.jsonl", shape, {q: "B" if q in wrong else "A" for q in qids(shape)})
    if trace is not None:
        lines = [{"id": q, "status": "done", "final": "B" if q in wrong else "A",
                  "source": "fallback" if q in fallback else "evaluate",
                  # the fields issue 13 adds (a model per sample, answer.models) are read past
                  "answer": {"letter": letter, "models": ["m1"], "samples": [{"letter": letter, "model": "m1"}]}}
                 for q, letter in trace.items()]
        (directory / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    if record is not None:
        (directory / "run.json").write_text(json.dumps(record), encoding="utf-8")
    return directory


def wrong_at(shape: list[int], accuracy: float, seed: int) -> set[str]:
    ids = qids(shape)
    return set(random.Random(seed).sample(ids, round(len(ids) * (1 - accuracy))))


def test_large_real_difference_is_significant(tmp_path: Path) -> None:
    gold = write_file(tmp_path / "gold.jsonl", TEST_SHAPE, gold_letters(TEST_SHAPE))
    a = make_run(tmp_path / "a", TEST_SHAPE, wrong_at(TEST_SHAPE, 0.89, seed=1))
    b = make_run(tmp_path / "b", TEST_SHAPE, wrong_at(TEST_SHAPE, 0.82, seed=2))
    result = compare([a, b], gold=gold, out_dir=tmp_path / "out")
    ra, rb = result.runs
    assert (ra.accuracy, rb.accuracy) == (round(1328 * 0.89) / 1328, round(1328 * 0.82) / 1328)
    assert ra.questions == rb.questions == result.common == 1328 and ra.problems == 500
    for r in (ra, rb):
        assert r.interval[0] < r.accuracy < r.interval[1] and r.interval[1] - r.interval[0] < 0.05
    (pair,) = result.pairs
    assert pair.p_value < 0.001
    assert pair.fixed - pair.broken == rb.accuracy * 1328 - ra.accuracy * 1328
    assert pair.p_value == mcnemar_exact(pair.fixed, pair.broken)
    assert (tmp_path / "out/compare.md").exists() and (tmp_path / "out/compare.png").stat().st_size > 1000


# questions B changes from A: (fixed by B, broken by B) -> significant at 0.05?
HANDFUL = [
    pytest.param(3, 2, False, id="three-fixed-two-broken"),
    pytest.param(5, 0, False, id="five-fixed"),  # p = 0.0625
    pytest.param(6, 0, True, id="six-fixed"),  # p = 0.03125
    pytest.param(0, 0, False, id="identical"),
]


@pytest.mark.parametrize("fixed, broken, significant", HANDFUL)
def test_a_handful_of_questions_is_not_significant(tmp_path: Path, fixed: int, broken: int, significant: bool) -> None:
    gold = write_file(tmp_path / "gold.jsonl", TEST_SHAPE, gold_letters(TEST_SHAPE))
    wrong_a = wrong_at(TEST_SHAPE, 0.85, seed=3)
    right_a = [q for q in qids(TEST_SHAPE) if q not in wrong_a]
    wrong_b = (wrong_a - set(sorted(wrong_a)[:fixed])) | set(right_a[:broken])
    a = make_run(tmp_path / "a", TEST_SHAPE, wrong_a)
    b = make_run(tmp_path / "b", TEST_SHAPE, wrong_b)
    (pair,) = compare([a, b], gold=gold, out_dir=tmp_path / "out", resamples=200).pairs
    assert (pair.fixed, pair.broken) == (fixed, broken)
    assert (pair.p_value < 0.05) == significant
    assert pair.agreement == (1328 - fixed - broken) / 1328


def test_agents_from_the_trace(tmp_path: Path) -> None:
    shape = [2, 2]  # p000#0 p000#1 p001#0 p001#1, gold all A
    gold = write_file(tmp_path / "gold.jsonl", shape, gold_letters(shape))
    # final wrong on p001#1; the Answer Agent: wrong on p000#0 (fixed), right on p001#1 (broken);
    # on p000#1 no letter, the fallback's right: not the Evaluate Agent's fix
    trace = {"p000#0": "C", "p000#1": None, "p001#0": "A", "p001#1": "A"}
    a = make_run(tmp_path / "a", shape, {"p001#1"}, trace=trace, fallback={"p000#1"})
    b = make_run(tmp_path / "b", shape, set())  # no trace: no agent columns
    ra, rb = compare([a, b], gold=gold, out_dir=tmp_path / "out").runs
    assert (ra.accuracy, ra.problem_accuracy, ra.answer_alone, ra.fixed, ra.broken) == (0.75, 0.5, 0.5, 1, 1)
    assert (rb.accuracy, rb.answer_alone, rb.fixed) == (1.0, None, None)


def test_common_questions_only_and_said(tmp_path: Path) -> None:
    shape = [2, 3, 1]
    gold = write_file(tmp_path / "gold.jsonl", shape, gold_letters(shape))
    a = make_run(tmp_path / "a", shape, set())
    b = make_run(tmp_path / "b", shape[:2], {"p001#2"})  # an `infer --limit 2` run
    result = compare([a, b], gold=gold, out_dir=tmp_path / "out")
    assert result.common == 5 and [r.held for r in result.runs] == [6, 5]
    assert result.runs[0].accuracy == 1.0 and result.runs[1].accuracy == 0.8
    assert "compared on 5 questions common to every run and the gold file (the runs hold 6, 5)" in table(result)
    from orchestrator.stages.score import score

    assert score(b / "submission.jsonl", gold, subset=True).accuracy == result.runs[1].accuracy


# One quirk in run B's submission (shape [2, 3, 1], gold all A, every other answer A): what
# `score` counts for it, what compare finds, and the agreement with a clean run A without gold.
def _edit(qid: str, change):
    def edit(lines: list[dict]) -> list[dict]:
        pid, i = qid.split("#")
        change(next(p for p in lines if p["id"] == pid)["questions"], int(i))
        return lines
    return edit


def _set(qid: str, value):
    return _edit(qid, lambda qs, i: qs[i].__setitem__("answer", value))


QUIRKS = [
    # id, edit of B's lines, accuracy (= score's), finding kind, (common, agreement) without gold
    pytest.param(_set("p000#0", "E"), 5 / 6, "not_offered", (6, 5 / 6), id="letter-not-offered"),
    pytest.param(_set("p001#1", None), 5 / 6, "no_answer", (6, 5 / 6), id="null"),
    pytest.param(_set("p001#1", "AB"), 5 / 6, "not_offered", (6, 5 / 6), id="two-letters"),
    pytest.param(_set("p002#0", 1), 5 / 6, "no_answer", (6, 5 / 6), id="a-number"),
    pytest.param(_edit("p001#0", lambda qs, i: qs[i].pop("answer")), 5 / 6, "no_answer", (6, 5 / 6),
                 id="no-answer-key"),
    pytest.param(_set("p000#1", " a "), 1.0, None, (6, 1.0), id="lowercase-padded"),
    pytest.param(_edit("p001#2", lambda qs, i: qs.pop(i)), 5 / 6, "missing_question", (5, 1.0),
                 id="missing-question"),
    # without gold a line whose questions are not objects says nothing: its problem is left out
    pytest.param(_edit("p001#1", lambda qs, i: qs.__setitem__(i, "A")), 5 / 6, "no_answer", (3, 1.0),
                 id="question-not-an-object"),
    pytest.param(lambda lines: [*lines, {**lines[0], "id": "zzz"}], 1.0, "extra_problem", (6, 1.0),
                 id="extra-problem"),
    pytest.param(lambda lines: lines[::-1], 1.0, "order", (6, 1.0), id="other-order"),
    pytest.param(_edit("p000#0", lambda qs, i: qs[i].update(note="x")), 1.0, "extra_keys", (6, 1.0),
                 id="extra-key"),
]


@pytest.mark.parametrize("edit, accuracy, kind, no_gold", QUIRKS)
def test_compare_scores_a_submission_as_score_does(tmp_path: Path, cli, edit, accuracy: float, kind: str | None,
                                                   no_gold: tuple[int, float]) -> None:
    from orchestrator.stages.score import score

    shape = [2, 3, 1]
    gold = write_file(tmp_path / "gold.jsonl", shape, gold_letters(shape))
    a = make_run(tmp_path / "a", shape, set())
    b = make_run(tmp_path / "b", shape, set())
    lines = [json.loads(x) for x in (b / "submission.jsonl").read_text(encoding="utf-8").splitlines()]
    (b / "submission.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in edit(lines)),
                                        encoding="utf-8")
    scored = score(b / "submission.jsonl", gold)
    result = compare([a, b], gold=gold, out_dir=tmp_path / "out")
    assert scored.accuracy == result.runs[1].accuracy == accuracy and result.common == 6
    assert (result.runs[0].accuracy, result.runs[0].findings) == (1.0, [])
    assert result.runs[1].findings == [f.text for f in scored.findings]
    assert [f.kind for f in scored.findings] == ([kind] if kind else [])
    report = (tmp_path / "out/compare.md").read_text(encoding="utf-8")
    for line in summarise(scored.findings):  # as `score` prints them under its table
        assert line in table(result) and line in report
    for f in scored.findings:
        assert f.text in report

    plain = compare([a, b], out_dir=tmp_path / "plain")
    assert (plain.common, plain.pairs[0].agreement) == no_gold


def test_without_gold_agreement_only(tmp_path: Path, cli) -> None:
    shape = [1, 1, 1, 1]
    a = make_run(tmp_path / "a", shape, {"p000#0"})
    b = make_run(tmp_path / "b", shape, {"p000#0", "p001#0"})
    code, out, err = cli("compare", a, b, "--out-dir", tmp_path / "out", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["gold"] is None and data["runs"][0]["accuracy"] is None and data["runs"][0]["interval"] is None
    assert data["pairs"] == [{"a": str(a), "b": str(b), "agreement": 0.75, "fixed": None, "broken": None,
                              "p_value": None}]
    code, out, err = cli("compare", a, b, "--out-dir", tmp_path / "out")
    assert "no gold file: agreement only" in out
    assert "agreement only" in (tmp_path / "out/compare.md").read_text(encoding="utf-8")


def test_what_differed(tmp_path: Path) -> None:
    shape = [1, 1]
    gold = write_file(tmp_path / "gold.jsonl", shape, gold_letters(shape))

    def record(votes: int, rank: int) -> dict:
        served = {"identity": "answer@abc", "model": "answer", "trained": f"2026-01-0{rank}",
                  "recipe": {"train": {"lora_rank": rank, "learning_rate": 1e-4}}}
        return {"input": "test.jsonl", "inference": {"votes": votes, "temperature": 0.0},
                "models": {"answer": served, "evaluate": {"identity": "ev", "url": "http://x/v1"}}}

    a = make_run(tmp_path / "a", shape, set(), record=record(1, 8))
    b = make_run(tmp_path / "b", shape, set(), record=record(3, 16))
    c = make_run(tmp_path / "c", shape, set())  # no run.json: every recorded value is unknown
    result = compare([a, b, c], gold=gold, out_dir=tmp_path / "out")
    assert result.runs[0].settings == {"inference.votes": 1, "answer.train.lora_rank": 8, "answer.model": "answer@abc",
                                       "answer.train.learning_rate": 1e-4, "evaluate.model": "ev", "evaluate.url": "http://x/v1",
                                       "inference.temperature": 0.0, "input": "test.jsonl"}
    two = compare([a, b], gold=gold, out_dir=tmp_path / "out")
    assert two.runs[1].settings == {"answer.train.lora_rank": 16, "inference.votes": 3}  # not `trained`
    assert f"inference.votes: {a} 1, {b} 3" in table(two)


BAD = [
    pytest.param(["missing"], "needs at least two run folders", id="one-run"),
    pytest.param(["missing", "a"], "missing: no such folder or file", id="no-such-dir"),
    pytest.param(["empty", "a"], "empty has no submission.jsonl", id="not-an-infer-folder"),
    pytest.param(["a", "other"], "share no question", id="different-inputs"),
]


@pytest.mark.parametrize("dirs, message", BAD)
def test_bad_runs_are_one_clear_error(tmp_path: Path, cli, monkeypatch, dirs: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "a", [1, 2], set())
    (tmp_path / "empty").mkdir()
    other = make_run(tmp_path / "other", [1], set())
    (other / "submission.jsonl").write_text((other / "submission.jsonl").read_text().replace("p000", "x"))
    code, _, err = cli("compare", *dirs)
    assert code == 2 and message in err and err.startswith("Error: ") and "Traceback" not in err


def test_worked_examples_compare_by_the_models_place_not_its_name(tmp_path: Path) -> None:
    """A --set variant's Answer model has another name (tiny-answer@7a83290d): its fewshot settings,
    the same as the recipe's, are no difference; another k is one."""
    shape = [1, 1]
    gold = write_file(tmp_path / "gold.jsonl", shape, gold_letters(shape))
    few = {"k": 0, "pool": "train", "pool_size": 0}
    a = make_run(tmp_path / "a", shape, set(), record={"fewshot": {"tiny-answer": few}})
    b = make_run(tmp_path / "b", shape, set(), record={"fewshot": {"tiny-answer@7a83290d": few}})
    c = make_run(tmp_path / "c", shape, set(), record={"fewshot": {"tiny-answer@7a83290d": {**few, "k": 2}}})
    assert not [k for k in compare([a, b], gold=gold, out_dir=tmp_path / "out").runs[1].settings if "fewshot" in k]
    assert compare([a, c], gold=gold, out_dir=tmp_path / "out").runs[1].settings == {"fewshot.k": 2}


def test_two_submission_files_compare_by_their_answers(tmp_path: Path, cli) -> None:
    """Published submissions are files, not infer folders: each compares by its answers alone."""
    shape = [2, 1, 1]
    gold = write_file(tmp_path / "gold.jsonl", shape, gold_letters(shape))
    a = make_run(tmp_path / "a", shape, {"p000#0"}) / "submission.jsonl"
    b = make_run(tmp_path / "b", shape, set()) / "submission.jsonl"
    code, out, err = cli("compare", a, b, "--gold", gold, "--out-dir", tmp_path / "out")
    assert code == 0, err
    result = compare([a, b], gold=gold, out_dir=tmp_path / "out")
    assert [r.accuracy for r in result.runs] == [0.75, 1.0] and result.pairs[0].fixed == 1
    assert f"{a}    0.7500" in out and "what differed: nothing the runs recorded" in out
    no_gold = compare([a, b], out_dir=tmp_path / "out")
    assert no_gold.pairs[0].agreement == 0.75


def test_gold_defaults_to_the_scored_one_and_must_agree(tmp_path: Path, cli) -> None:
    from orchestrator.stages.score import score

    shape = [2, 1]
    gold = write_file(tmp_path / "gold.jsonl", shape, gold_letters(shape))
    other = write_file(tmp_path / "other.jsonl", shape, {q: "B" for q in qids(shape)})
    a = make_run(tmp_path / "a", shape, {"p000#0"}, trace={})
    b = make_run(tmp_path / "b", shape, set(), trace={})
    score(a / "submission.jsonl", gold)
    score(b / "submission.jsonl", gold)
    result = compare([a, b], out_dir=tmp_path / "out")
    assert result.gold == str(gold.resolve()) and [r.accuracy for r in result.runs] == [2 / 3, 1.0]
    score(b / "submission.jsonl", other)
    code, _, err = cli("compare", a, b, "--out-dir", tmp_path / "out")
    assert code == 2 and "scored against different gold files" in err and "--gold FILE" in err
    assert compare([a, b], gold=other, out_dir=tmp_path / "out").runs[0].accuracy == 1 / 3


# ---------------------------------------------------------------- real infer runs


def test_compare_real_infer_runs(project: Path, cli) -> None:
    """Two infer runs of one file: the Evaluate Agent answers gold in one, a hash in the other."""
    ids = write_competition(project / "test.jsonl")
    gold = {q: "A" for q in ids}  # every question has an option A
    test = json.loads("[" + ",".join((project / "test.jsonl").read_text().splitlines()) + "]")
    for p in test:
        for q in p["questions"]:
            q["answer"] = "A"
    (project / "gold.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in test))

    def knows(prompt: str, request: dict) -> str:
        return "答案是：A" if any(marker(q) in prompt for q in gold) else default_reply(prompt, request)

    with FakeOpenAI(models=("ans",)) as answer, FakeOpenAI(models=("ev",), reply=knows) as good, \
            FakeOpenAI(models=("ev",)) as guess:
        for name, evaluate, votes in (("good", good, "1"), ("guess", guess, "3")):
            code, _, err = cli("infer", project / "test.jsonl", "--out-dir", project / name, "--answer-url",
                                 answer.url, "--evaluate-url", evaluate.url, "--votes", votes)
            assert code == 0, err
            assert cli("score", project / name / "submission.jsonl", project / "gold.jsonl")[0] == 0
    code, out, err = cli("compare", project / "good", project / "guess", "--json")
    assert code == 0, err
    data = json.loads(out)
    good_run, guess_run = data["runs"]
    assert good_run["accuracy"] == 1.0 and good_run["questions"] == len(ids) == data["common"]
    assert guess_run["accuracy"] < 1.0 and guess_run["interval"][0] <= guess_run["accuracy"]
    (pair,) = data["pairs"]
    assert pair["fixed"] == 0 and pair["broken"] == round((1 - guess_run["accuracy"]) * len(ids))
    assert guess_run["settings"]["inference.votes"] == 3 and good_run["settings"]["inference.votes"] == 1
    assert "inference.evaluate_url" in good_run["settings"]
    assert (project / "runs/compare/compare.md").exists() and (project / "runs/compare/compare.png").exists()


def served(answer: str, evaluate: str, url: str | None = None) -> dict:
    """run.json's models as infer records them: a served model's identity is its content hash."""
    return {"models": {"answer": {"model": "answer", "identity": answer, "url": url},
                       "evaluate": {"model": "evaluate", "identity": evaluate, "url": None}}}


@pytest.mark.parametrize("records, line", [
    ([served("a1", "e1"), served("a1", "e1")], "models: the same in every run (answer a1, evaluate e1)"),
    ([served("a1", "e1"), served("a2", "e1")], "models: not the same (their identities are under what differed)"),
    ([served("a1", "e1"), served("a1", "e1", url="http://127.0.0.1:9/v1")], None),  # an endpoint: its name only
    ([served("a1", "e1"), None], None),  # a run without run.json
], ids=["same", "another-adapter", "an-endpoint", "no-record"])
def test_compare_says_whether_the_models_were_the_same(tmp_path: Path, records, line) -> None:
    shape = [2, 1]
    gold = write_file(tmp_path / "gold.jsonl", shape, gold_letters(shape))
    runs = [make_run(tmp_path / f"r{i}", shape, set(), record=r) for i, r in enumerate(records)]
    result = compare(runs, gold=gold, out_dir=tmp_path / "out")
    assert result.models == line == result.to_json()["models"]
    assert (line in table(result).splitlines()) if line else not any(
        x.startswith("models: ") for x in table(result).splitlines())
    if line:
        assert line[0].upper() + line[1:] + "." in (tmp_path / "out" / "compare.md").read_text()


def test_a_gold_letter_not_offered_is_compared_never_right(tmp_path: Path, cli) -> None:
    """Like `score`: the gold file's slip ('F' of four options) blocks nothing; it is named with
    file, line and question, and counts wrong for every run."""
    shape = [2, 2, 1]
    letters = {**gold_letters(shape), "p001#1": "F"}
    gold = write_file(tmp_path / "gold.jsonl", shape, letters)
    a = make_run(tmp_path / "a", shape, set())
    b = make_run(tmp_path / "b", shape, {"p000#0"})
    result = compare([a, b], gold=gold, out_dir=tmp_path / "out")
    assert [r.accuracy for r in result.runs] == [4 / 5, 3 / 5]
    named = f"{gold}:2: p001 questions[1].answer 'F' is not one of the offered letters ABCD: counted, never right"
    assert result.gold_findings == [named]
    code, out, err = cli("compare", str(a), str(b), "--gold", str(gold), "--out-dir", str(tmp_path / "out"))
    assert code == 0, err
    assert f"1 gold answers that are not an offered letter (counted, never right): {named}" in out.splitlines()
    assert f"- {named}" in (tmp_path / "out/compare.md").read_text(encoding="utf-8")


def test_one_recipe_spelled_two_ways_is_no_difference(project: Path) -> None:
    shape = [1, 1]
    gold = write_file(project / "gold.jsonl", shape, gold_letters(shape))
    spelled = [f"{project}/recipes/tiny-answer.yaml", "recipes/tiny-answer.yaml"]
    runs = [make_run(project / f"r{i}", shape, set(), record={"input": "test.jsonl", "inference": {
        "answer_recipe": recipe, "votes": i + 1}}) for i, recipe in enumerate(spelled)]
    result = compare(runs, gold=gold, out_dir=project / "out")
    assert result.runs[0].settings == {"inference.votes": 1}  # the recipe path is the same file


def test_runs_on_different_inputs_side_by_side(tmp_path: Path, cli) -> None:
    """The demo's run and an own-data run: each against the gold it was scored with, no pairs."""
    runs = []
    for name, shape, wrong in (("demo", [1, 2], {"p000#0"}), ("own", [2, 2, 1], set())):
        run = make_run(tmp_path / name, shape, wrong)
        gold = write_file(tmp_path / f"{name}-gold.jsonl", shape, gold_letters(shape))
        gold.write_text(gold.read_text().replace('"id": "p', f'"id": "{name}-p'), encoding="utf-8")
        sub = run / "submission.jsonl"
        sub.write_text(sub.read_text().replace('"id": "p', f'"id": "{name}-p'), encoding="utf-8")
        (run / "score.json").write_text(json.dumps({"gold": str(gold)}), encoding="utf-8")
        runs.append(run)
    code, out, err = cli("compare", *runs, "--out-dir", tmp_path / "out")
    assert code == 0, err
    assert out.startswith("different inputs, side by side: each run against the gold it was scored with "
                          "(score.json), no question in common, so no pairs")
    result = compare(runs, out_dir=tmp_path / "out")
    assert [r.accuracy for r in result.runs] == [2 / 3, 1.0] and result.pairs == []
    assert "None: the runs share no question" in (tmp_path / "out/compare.md").read_text(encoding="utf-8")
