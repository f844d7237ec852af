"""Adaptive votes (inference.extra_votes) and several samples in one request (`n`), against
loopback servers: the extra round goes only to the questions the first round leaves open."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
from fake_openai import FakeOpenAI
from helpers import read_jsonl, write_competition

from orchestrator.stages.infer import wants_extra


@pytest.mark.parametrize(("letters", "rule", "expected"), [
    (["A", "A", "A"], "split", False),
    (["A", "A", "B"], "split", True),
    (["A", None, "A"], "split", True),  # a sample without a letter leaves the question open
    (["A"], "split", False),
    ([], "split", False),
    (["A", "A", "B"], "no_majority", False),
    (["A", "B", "C"], "no_majority", True),
    (["A", "A", "B", "B"], "no_majority", True),  # half is not a majority
    ([None, None, None], "no_majority", True),
])
def test_wants_extra(letters, rule, expected):
    assert wants_extra(letters, rule) is expected


class Split:
    """Replies whose letter stays A, except for prompts holding `marker`: those alternate A, B, A..."""

    def __init__(self, marker: str):
        self.marker, self.seen, self.lock = marker, Counter[str](), threading.Lock()

    def __call__(self, prompt: str, request: dict) -> str:
        with self.lock:
            self.seen[prompt] += 1
            n = self.seen[prompt]
        letter = "AB"[n % 2] if self.marker in prompt else "A"
        return f"### 思考思路:\n1. 推理\n### 可能的结果:\n答案是：{letter}"


@pytest.mark.parametrize("mode", ["staged", "pipelined"])
@pytest.mark.parametrize("honour_n", [True, False])
def test_extra_votes_only_where_split(project, cli, mode, honour_n):
    qids = write_competition(project / "test.jsonl")  # problem 1's two questions split
    split = {q for q in qids if q.startswith("p001")}
    with FakeOpenAI(reply=Split("题目1："), honour_n=honour_n, models=("ans",)) as a, \
            FakeOpenAI(models=("ev",)) as e:
        args = ["infer", project / "test.jsonl", "--out-dir", project / "out", "--answer-url", a.url,
                "--evaluate-url", e.url, "--answer-model", "ans", "--evaluate-model", "ev", "--mode", mode,
                "--votes", "3", "--set", "inference.extra_votes=2"]
        code, out, err = cli(*args)
        assert code == 0, err
        per_sample = 1 if honour_n else 3  # round 1: one request with n=3, or three
        extra_requests = 1 if honour_n else 2
        assert a.completions == len(qids) * per_sample + len(split) * extra_requests
        trace = {r["id"]: r for r in read_jsonl(project / "out" / "trace.jsonl")}
        for qid, r in trace.items():
            samples = r["answer"]["samples"]
            assert r["answer"]["extra_rounds"] == (qid in split)
            assert len(samples) == (5 if qid in split else 3)
            assert [s["index"] for s in samples] == list(range(len(samples)))
        rows = {line.split("  ")[0]: line for line in out.splitlines()}
        assert f"{len(qids)} questions, {a.completions - len(split) * extra_requests} requests" \
            in rows["answer round 1"]
        assert f"{len(split)} questions, {len(split) * extra_requests} requests" \
            in rows["answer round 2 (+2 votes where split)"]
        said = "several samples in one request (n)" if honour_n else "one request per sample (the endpoint ignores n)"
        assert f"ans: {said}" in err

        a.reset_counts(), e.reset_counts()
        code, out, err = cli(*args)  # resumed: nothing is asked again
        assert code == 0, err
        assert (a.completions, e.completions) == (0, 0)

    gold = project / "gold.jsonl"
    gold.write_text("".join(json.dumps({**p, "questions": [{**q, "answer": "A"} for q in p["questions"]]},
                                       ensure_ascii=False) + "\n" for p in read_jsonl(project / "test.jsonl")),
                    encoding="utf-8")
    code, out, err = cli("score", project / "out" / "submission.jsonl", gold)
    assert code == 0, err
    line = f"Answer rounds: {len(qids)} questions got {3 * len(qids)} first samples; {len(split)} (22%) left open " \
           f"got {2 * len(split)} extra samples"
    assert line in out and line in (project / "out" / "report.md").read_text(encoding="utf-8")


def test_extra_round_of_an_ensemble_follows_the_pooled_samples(project, cli):
    """Two models, each unanimous on its own but disagreeing with each other: pooled, the
    question is split, so both models get the extra votes."""
    qids = write_competition(project / "test.jsonl")

    def always(letter: str):
        return lambda prompt, request: f"### 可能的结果:\n答案是：{letter}"

    with FakeOpenAI(reply=always("A"), models=("m1",)) as m1, FakeOpenAI(reply=always("B"), models=("m2",)) as m2, \
            FakeOpenAI(models=("ev",)) as e:
        code, out, err = cli("infer", project / "test.jsonl", "--out-dir", project / "out",
                             "--answer-url", m1.url, "--answer-url", m2.url, "--answer-model", "m1",
                             "--answer-model", "m2", "--evaluate-url", e.url, "--evaluate-model", "ev",
                             "--votes", "2", "--set", "inference.extra_votes=1")
        assert code == 0, err
        assert m1.completions == m2.completions == len(qids) * 3
    for r in read_jsonl(project / "out" / "trace.jsonl"):
        assert r["answer"]["extra_rounds"] == 1
        assert Counter(s["model"] for s in r["answer"]["samples"]) == {"m1": 3, "m2": 3}
