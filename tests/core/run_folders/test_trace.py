"""The typed trace: lines of the version before `core/run_folders/trace.py` still read; new lines carry every key."""

from __future__ import annotations

import json

import pytest

from orchestrator.core.run_folders.trace import AnswerStep, Sample, TraceRecord, read_trace

# A line as `infer` wrote it before the trace had a type: two models, two votes each, the second
# model's first sample failed (no index, no letter: only its error), the Evaluate Agent disagreed.
OLD_LINE = (
    '{"key":"k1","id":"p000#0","status":"failed","final":"B","source":"evaluate",'
    '"answer":{"model":"m1+m2","models":["m1","m2"],"samples":['
    '{"text":"t0","letter":"A","latency":0.5,"attempts":1,"finish_reason":"stop","model":"m1"},'
    '{"text":"t1","letter":"A","latency":0.25,"attempts":1,"finish_reason":"stop","model":"m1"},'
    '{"error":"http 500","model":"m2"},'
    '{"text":"t3","letter":"C","latency":0.75,"attempts":2,"finish_reason":"length","model":"m2"}],'
    '"votes":{"A":2,"C":1},"letter":"A","chosen":0,"by_model":{"m1":"A","m2":"C"}},'
    '"evaluate":{"model":"ev","text":"e","letter":"B","latency":1.0,"attempts":1,"finish_reason":"stop"},'
    '"errors":[{"id":"p000#0","stage":"answer","kind":"api","reason":"http 500","attempts":2,"detail":"x",'
    '"sample":2,"model":"m2"},{"id":"p000#0","stage":"evaluate","kind":"disagreement","answer_letter":"A",'
    '"evaluate_letter":"B","answer_text":"t0","evaluate_text":"e"}]}\n'
)


def test_a_line_of_the_previous_version_reads(tmp_path):
    path = tmp_path / "trace.jsonl"
    path.write_text(OLD_LINE, encoding="utf-8")
    (record,) = read_trace(path).values()
    assert (record.id, record.status, record.final, record.source) == ("p000#0", "failed", "B", "evaluate")
    samples = record.answer.samples
    assert [(s.model, s.index, s.letter, s.error) for s in samples] == [
        ("m1", 0, "A", None), ("m1", 1, "A", None), ("m2", 0, None, "http 500"), ("m2", 1, "C", None)]
    assert [s.answered for s in samples] == [True, True, False, True]
    assert record.answer.by_model == {"m1": "A", "m2": "C"}
    assert record.answer.letters_by_model() == {"m1": ["A", "A"], "m2": [None, "C"]}
    assert record.evaluate is not None and (record.evaluate.model, record.evaluate.letter) == ("ev", "B")
    assert [(e.kind, e.stage, e.sample, e.model) for e in record.errors] == [
        ("api", "answer", 2, "m2"), ("disagreement", "evaluate", None, None)]
    # written again: every key of the record, the problems exactly as they were
    line = record.line()
    old = json.loads(OLD_LINE)
    assert line["errors"] == old["errors"]
    assert set(line) == set(TraceRecord.model_fields)
    assert all(set(s) == set(Sample.model_fields) for s in line["answer"]["samples"])
    assert TraceRecord.model_validate(json.loads(json.dumps(line))) == record


@pytest.mark.parametrize("answer, models, indexes, by_model", [
    # one model, its name only on the step (the oldest lines): every sample is its
    ({"model": "a", "samples": [{"letter": "A"}, {"letter": "B"}, {"letter": "B"}]}, ["a"], [0, 1, 2], {"a": "B"}),
    # nothing named at all
    ({"samples": [{"letter": "C"}]}, ["answer"], [0], {"answer": "C"}),
    # samples of two models interleaved: each numbered among its own
    ({"models": ["x", "y"], "samples": [{"model": "x", "letter": "A"}, {"model": "y", "letter": "B"},
                                        {"model": "x", "letter": "B"}]}, ["x", "y"], [0, 0, 1], {"x": "A", "y": "B"}),
])
def test_what_an_older_step_lacks_comes_from_its_samples(answer, models, indexes, by_model):
    step = AnswerStep.model_validate(answer)
    assert step.models == models and step.model == "+".join(models)
    assert [s.index for s in step.samples] == indexes
    assert step.by_model == by_model


def test_lines_that_are_not_records_are_skipped(tmp_path):
    path = tmp_path / "trace.jsonl"
    path.write_text('{"no": "id"}\n[1, 2]\n' + OLD_LINE + '{"id": "p000#1", "source": "guess"}\n', encoding="utf-8")
    assert list(read_trace(path)) == ["p000#0"]
