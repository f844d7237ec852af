"""dataset.evaluate_source: answer_model: the Evaluate set built from the Answer model's own
replies, right and wrong, each with the gold letter as its target."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest
from fake_openai import FailPrompts, FakeOpenAI, default_reply, expected_letter
from helpers import make_train, trained_runs

from orchestrator.core.data.competition import read_dataset
from orchestrator.core.data.prompts import answer_prompt
from orchestrator.core.recipes.loading import load_role

SAMPLES = 3
SOURCE, SAMPLED = "dataset.evaluate_source=answer_model", f"dataset.evaluate_samples={SAMPLES}"


class RightWrongNone:
    """Per question: the first reply right (the gold letter), the second a wrong letter, the
    third without a letter. Notes each request's temperature."""

    def __init__(self) -> None:
        self.seen, self.temperatures, self.lock = Counter(), set(), threading.Lock()

    def __call__(self, prompt: str, request: dict) -> str:
        with self.lock:
            n = self.seen[prompt]
            self.seen[prompt] += 1
            self.temperatures.add(request.get("temperature"))
        right = expected_letter(prompt)
        if n % 3 == 0:
            return default_reply(prompt, request)
        if n % 3 == 1:
            return f"### 思考思路:\n1. 错误的推理。\n### 可能的结果:\n答案是：{'B' if right == 'A' else 'A'}"
        return "### 思考思路:\n1. 想不出来。"


def setup(project: Path) -> tuple[Path, str]:
    train = make_train(project / "train.jsonl", problems=4, per_problem=3)  # gold = default_reply's letter
    (project / "recipes" / "pl.yaml").write_text("extends: pipeline.yaml\ndata:\n  train: train.jsonl\n", encoding="utf-8")
    return train, "recipes/pl.yaml"


def args(url: str, pipeline: str, *extra: str) -> list[str]:
    return ["dataset", "evaluate", "--pipeline", pipeline, "--set", SOURCE, "--set", SAMPLED, "--answer-url", url, *extra]


def test_replies_right_and_wrong_with_the_gold_target(project: Path, cli) -> None:
    train, pipeline = setup(project)
    questions = read_dataset(train).questions
    replies = RightWrongNone()
    with FakeOpenAI(models=("answer-ft",), reply=replies) as server:
        code, out, err = cli(*args(server.url, pipeline))
        assert code == 0, err
        assert server.completions == len(questions) * SAMPLES
        assert replies.temperatures == {0.7}  # inference.vote_temperature

        # the --set of dataset keys builds a variant's own set, never the recipe's train_evaluate_instruct.json
        built = load_role("evaluate", None, [SOURCE, SAMPLED]).recipe.dataset_name
        assert built.startswith("train_evaluate_instruct.")
        assert not (project / "datasets" / "train_evaluate_instruct.json").exists()
        rows = json.loads((project / "datasets" / f"{built}.json").read_text(encoding="utf-8"))
        assert len(rows) == len(questions) * SAMPLES
        for q in questions:
            mine = [r for r in rows if q.question in r["instruction"]]
            assert len(mine) == SAMPLES
            assert {r["output"] for r in mine} == {f"答案是：{q.answer}"}  # the gold letter, right reply or wrong
        texts = {default_reply(answer_prompt(q), {}) for q in questions}
        assert sum(any(t.strip() in r["instruction"] for t in texts) for r in rows) == len(questions)
        n = len(questions) * SAMPLES
        wrong = 2 * len(questions)
        assert f"Answer-model replies (answer-ft): {n}, wrong {wrong} ({wrong / n:.0%}; {len(questions)} without a letter); {n} asked now, 0 cached" in out

        # cached: the same command asks nothing again
        code, out, err = cli(*args(server.url, pipeline))
        assert code == 0, err
        assert server.completions == n and f"0 asked now, {n} cached" in out


def test_failed_requests_are_asked_again_next_run(project: Path, cli) -> None:
    _train, pipeline = setup(project)
    n = 12 * SAMPLES
    with FakeOpenAI(faults=FailPrompts("问题 1-2?", "400")) as server:
        code, out, err = cli(*args(server.url, pipeline))
        assert code == 1
        assert f"{SAMPLES} Answer-model requests failed (t1#2 sample" in err
        assert f"the {n - SAMPLES} replies received are cached" in err
        built = load_role("evaluate", None, [SOURCE, SAMPLED]).recipe.dataset_name
        assert not (project / "datasets" / f"{built}.json").exists()
    with FakeOpenAI() as server:
        code, out, err = cli(*args(server.url, pipeline))
        assert code == 0, err
        assert server.completions == SAMPLES and f"{SAMPLES} asked now, {n - SAMPLES} cached" in out


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["dataset", "answer", "--answer-url", "http://127.0.0.1:9/v1"],
         "--answer-url and --answer-model are for `dataset evaluate` with dataset.evaluate_source: answer_model"),
        (["dataset", "evaluate", "--answer-model", "x"],
         "--answer-url and --answer-model are for `dataset evaluate` with dataset.evaluate_source: answer_model"),
        (["dataset", "evaluate", "--set", "dataset.evaluate_source=student"],
         "dataset.evaluate_source must be one of 'teacher' or 'answer_model', got 'student'"),
        (["dataset", "evaluate", "--set", "dataset.evaluate_source=answer_model"],
         "runs/answer/merged has no merged model: run `orchestrator merge answer` first"),
    ],
)
def test_refusals(project: Path, cli, extra: list, expected: str) -> None:
    code, _out, err = cli(*extra)
    assert code == 2 and expected in err, err


@pytest.mark.slow
def test_from_the_tiny_answer_model(tiny_project: Path, made_eval, cli) -> None:
    """The tiny Answer model trained and merged (the session's: conftest's made_eval), then the
    Evaluate set built from it, served."""
    make_train(tiny_project / "train.jsonl", problems=1, per_problem=2)
    (tiny_project / "recipes" / "pl.yaml").write_text(
        "extends: tiny-pipeline.yaml\ndata:\n  train: train.jsonl\n", encoding="utf-8")
    assert made_eval.done.returncode == 0, made_eval.done.stderr[-3000:]
    trained_runs(made_eval.project, tiny_project, "tiny-answer")
    # the merged folder's own chat template renders the training prompt (merge wrote LF's into it)
    from helpers import training_encoder
    from transformers import AutoTokenizer

    merged = AutoTokenizer.from_pretrained(str(tiny_project / "runs" / "tiny-answer" / "merged"))
    user = answer_prompt(read_dataset(tiny_project / "train.jsonl").questions[0])
    text = merged.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False)
    assert merged(text, add_special_tokens=False)["input_ids"] == training_encoder("recipes/tiny-answer.yaml", "answer")(user)
    code, out, err = cli("dataset", "evaluate", "--recipe", "recipes/tiny-evaluate.yaml", "--pipeline", "recipes/pl.yaml",
                         "--set", "dataset.evaluate_source=answer_model", "--set", "dataset.evaluate_samples=2")
    assert code == 0, err
    built = load_role("evaluate", "recipes/tiny-evaluate.yaml", [SOURCE, "dataset.evaluate_samples=2"]).recipe.dataset_name
    rows = json.loads((tiny_project / "datasets" / f"{built}.json").read_text(encoding="utf-8"))  # the variant's set
    assert len(rows) == 4 and all(r["output"].startswith("答案是：") for r in rows)
    assert "Answer-model replies (tiny-answer@" in out and ", wrong " in out
    cached = list((tiny_project / "runs").glob("tiny-evaluate@*/answer_samples.jsonl"))  # the variant's run folder
    assert cached and len(cached[0].read_text().splitlines()) == 4
