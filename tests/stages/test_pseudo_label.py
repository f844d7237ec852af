"""pseudo-label: questions of an infer run whose Answer samples agree, with provenance, and
data.extra_train counted as its own source by distill, dataset and the manifest."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from helpers import make_train, teacher_flags
from helpers import marker, read_jsonl, write_competition

from orchestrator.core.common.errors import UserError
from orchestrator.core.data.competition import read_dataset
from orchestrator.core.data.sources import training_data
from orchestrator.core.recipes.loading import load_pipeline, load_role
from orchestrator.core.run_folders.trace import AnswerStep
from orchestrator.stages.dataset import build_dataset
from orchestrator.stages.distill import distill
from orchestrator.stages.pseudo_label import agreement, pseudo_label

# the letters the Answer model gives each question's 3 samples (None: a reply without a letter)
PLAN = {
    "p000#0": "AAA", "p001#0": "BBC", "p001#1": "ABC", "p002#0": "CCC", "p002#1": [None] * 3,
    "p002#2": "DDA", "p003#0": "ABA", "p004#0": "GGG", "p004#1": "ABB",
}


class Planned:
    """Answer replies following PLAN, one letter per sample in the order requests arrive."""

    def __init__(self) -> None:
        self.sent, self.lock = Counter(), threading.Lock()

    def __call__(self, prompt: str, request: dict) -> str:
        qid = next(q for q in PLAN if marker(q) in prompt)
        with self.lock:
            letter = PLAN[qid][self.sent[qid] % 3]
            self.sent[qid] += 1
        return f"### 思考思路:\n1. 逐项分析。\n### 可能的结果:\n答案是：{letter}" if letter else "我说不好。"


@pytest.fixture
def voted_run(project: Path, cli) -> Path:
    """An infer run with 3 votes per question against loopback servers, traced."""
    write_competition(project / "test.jsonl")
    with FakeOpenAI(models=("ans",), reply=Planned()) as answer, FakeOpenAI(models=("ev",)) as evaluate:
        code, _out, err = cli("infer", project / "test.jsonl", "--out-dir", project / "run", "--votes", "3",
                             "--answer-url", answer.url, "--evaluate-url", evaluate.url)
    assert code == 0, err
    return project / "run"


@pytest.mark.parametrize(
    "k, expected",
    [
        (3, {"p000#0": "A", "p002#0": "C", "p004#0": "G"}),
        (2, {"p000#0": "A", "p001#0": "B", "p002#0": "C", "p002#2": "D", "p003#0": "A", "p004#0": "G", "p004#1": "B"}),
    ],
)
def test_exactly_the_questions_that_reached_k(voted_run: Path, project: Path, cli, k: int, expected: dict) -> None:
    out = project / "pseudo.jsonl"
    code, stdout, err = cli("pseudo-label", voted_run, "--min-agree", k, "--out", out)
    assert code == 0, err
    provenance = read_jsonl(project / "pseudo.provenance.jsonl")
    assert {p["source_id"]: p["letter"] for p in provenance} == expected
    # competition format, readable as training data, with the agreed letters as answers
    written = read_dataset(out)
    assert {p["id"]: q.answer for p, q in zip(provenance, written.questions, strict=True)} == \
        {q.qid: q.answer for q in written.questions}
    assert [p["source_id"] for p in provenance] == sorted(expected)  # input order, nothing else
    for p in provenance:
        assert p["models"] == ["ans"] and p["count"] == Counter(PLAN[p["source_id"]])[p["letter"]] >= k
        assert sorted(p["letters"]["ans"]) == sorted(PLAN[p["source_id"]]) and p["samples"] == 3
    assert f"written (reached the agreement)  {len(expected)}" in stdout


def test_ties_and_skipped_questions_are_counted(voted_run: Path, project: Path) -> None:
    summary = pseudo_label(voted_run, min_agree=1, out=project / "p1.jsonl")
    assert summary.tied == 1  # p001#1: A, B and C once each
    assert summary.below == 1  # p002#1: no letter at all
    assert summary.written == len(PLAN) - 2
    # a problem that lost a question keeps its others, renumbered
    ids = {p["source_id"]: p["id"] for p in read_jsonl(project / "p1.provenance.jsonl")}
    assert ids["p002#2"] == "p002#1" and ids["p001#0"] == "p001#0"


def ensemble_trace(run: Path) -> None:
    """A run of two Answer models (the trace shape with answer.models and samples[i].model)."""
    write_competition(run / "submission.jsonl", [[4, 4]])
    samples = {"p000#0": [("m1", "A"), ("m1", "A"), ("m2", "A"), ("m2", "B")],
               "p000#1": [("m1", "C"), ("m1", "D"), ("m2", "C"), ("m2", None)]}
    records = [{"id": qid, "status": "done", "final": "A",
                "answer": {"models": ["m1", "m2"], "samples": [{"model": m, "letter": x, "text": "t"} for m, x in s]}}
               for qid, s in samples.items()]
    (run / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_several_models_count_together(project: Path) -> None:
    run = project / "ensemble"
    run.mkdir()
    ensemble_trace(run)
    summary = pseudo_label(run, min_agree=3, out=project / "ens.jsonl")
    assert summary.written == 1
    (p,) = read_jsonl(project / "ens.provenance.jsonl")
    assert p["source_id"] == "p000#0" and p["letter"] == "A" and p["count"] == 3
    assert p["models"] == ["m1", "m2"] and p["letters"] == {"m1": ["A", "A"], "m2": ["A", "B"]}


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"answer": {"model": "a", "samples": [{"letter": "A"}, {"letter": "A"}, {"letter": "B"}]}}, ("A", 2, False)),
        ({"answer": {"model": "a", "samples": [{"letter": "A"}, {"letter": "B"}]}}, ("A", 1, True)),
        ({"answer": {"model": "a", "samples": [{"error": "timeout"}, {"letter": "C"}]}}, ("C", 1, False)),
        ({"answer": {"model": "a", "samples": [{"letter": None}]}}, (None, 0, False)),
        ({"answer": {"models": ["x", "y"], "samples": [{"model": "x", "letter": "B"}, {"model": "y", "letter": "B"}]}},
         ("B", 2, False)),
    ],
)
def test_agreement_rule(record: dict, expected: tuple) -> None:
    assert agreement(AnswerStep.model_validate(record["answer"]).letters_by_model()) == expected


@pytest.mark.parametrize(
    "setup, args, expected",
    [
        ("none", ["--min-agree", "2"], "has no trace.jsonl: give the --out-dir of a finished `orchestrator infer` run"),
        ("ensemble", ["--min-agree", "5"], "--min-agree 5: the run has at most 4 Answer samples per question"),
        ("ensemble", ["--min-agree", "4"], "reached 4 agreeing votes (2 below, 0 tied); nothing written"),
        ("ensemble", ["--min-agree", "0"], "Invalid value for '--min-agree'"),
    ],
)
def test_pseudo_label_errors(project: Path, cli, setup: str, args: list, expected: str) -> None:
    run = project / "r"
    run.mkdir()
    if setup == "ensemble":
        ensemble_trace(run)
    code, _out, err = cli("pseudo-label", run, *args, "--out", project / "x.jsonl")
    assert code == 2 and expected in err, err
    assert not (project / "x.jsonl").exists()


# ---------------------------------------------------------------- data.extra_train


def pipeline_with(project: Path, extra: list[str], train: str = "train.jsonl") -> str:
    (project / "recipes" / "pl.yaml").write_text(
        f"extends: pipeline.yaml\ndata:\n  train: {train}\n  extra_train: {json.dumps(extra)}\n", encoding="utf-8")
    return "recipes/pl.yaml"


def test_extra_train_is_a_separate_source_everywhere(voted_run: Path, project: Path, cli) -> None:
    make_train(project / "train.jsonl", problems=2, per_problem=2)
    pseudo_label(voted_run, min_agree=2, out=project / "pseudo.jsonl")
    recipe = pipeline_with(project, ["pseudo.jsonl"])
    with FakeOpenAI() as teacher:
        summary = distill(pipeline=load_pipeline(recipe, teacher_flags(teacher.url)), echo=False)
    assert summary.questions == 4 + 7 and summary.sources == [("train.jsonl", "gold", 4), ("pseudo.jsonl", "pseudo-labels", 7)]
    assert re.search(r"^  from pseudo\.jsonl \(pseudo-labels\) +7$", summary.table(), re.MULTILINE)

    code, out, err = cli("dataset", "evaluate", "--pipeline", recipe)
    assert code == 0, err
    assert "  from train.jsonl (gold): 4 samples of 4 questions" in out
    assert "  from pseudo.jsonl (pseudo-labels): 7 samples of 7 questions" in out
    assert "target letters (gold and extra_train): " in out
    recorded = json.loads((project / "datasets" / "train_evaluate_instruct.sources.json").read_text())
    assert [(s["file"], s["kind"], s["samples"]) for s in recorded["sources"]] == \
        [("train.jsonl", "gold", 4), ("pseudo.jsonl", "pseudo-labels", 7)]
    code, out, err = cli("dataset", "answer", "--pipeline", recipe)  # keep: agreeing, per source
    assert code == 0, err
    assert re.search(r"^  from pseudo\.jsonl \(pseudo-labels\): \d+ samples of 7 questions$", out, re.MULTILINE)
    # what `train` copies into the trained model's manifest
    data = training_data(load_role("evaluate").recipe)
    assert [(s["kind"], s["questions"]) for s in data["dataset"]["sources"]] == [("gold", 4), ("pseudo-labels", 7)]
    rows = json.loads((project / "datasets" / "train_evaluate_instruct.json").read_text())
    provenance = read_jsonl(project / "pseudo.provenance.jsonl")
    assert [r["output"] for r in rows[4:]] == [f"答案是：{p['letter']}" for p in provenance]  # the agreed letters


@pytest.mark.parametrize(
    "extra, content, expected",
    [
        (["gone.jsonl"], None, "data.extra_train[0]: gone.jsonl does not exist"),
        (["train.jsonl"], None, "question t0#0 is also in train.jsonl (data.train); a question comes from one file only"),
        (["nolabel.jsonl"], "nolabel", "data.extra_train[0]: nolabel.jsonl: 2 questions have no answer (first u0#0)"),
    ],
)
def test_extra_train_refusals(project: Path, extra: list, content: str | None, expected: str) -> None:
    make_train(project / "train.jsonl", problems=2, per_problem=2)
    if content:
        problem = {"id": "u0", "problem": "题目", "questions": [{"question": "问", "options": ["a", "b"]}] * 2}
        (project / "nolabel.jsonl").write_text(json.dumps(problem, ensure_ascii=False) + "\n", encoding="utf-8")
    recipe = pipeline_with(project, extra)
    with pytest.raises(UserError, match=re.escape(expected)):  # before any request
        distill(pipeline=load_pipeline(recipe, teacher_flags("http://127.0.0.1:9/v1")), echo=False)
    with pytest.raises(UserError, match=re.escape(expected)):
        build_dataset(role=load_role("answer"), pipeline=load_pipeline(recipe))
