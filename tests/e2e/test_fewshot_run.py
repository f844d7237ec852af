"""Few-shot end to end on the tiny model: a k=1 variant distilled, built, trained and served by
the real llamafactory-cli beside the plain model (the session's trained one: conftest's
made_eval), both answering the held-out problems, and `compare` telling the runs apart by their
fewshot setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from helpers import read_jsonl, trained_runs

from orchestrator.core.data.competition import read_dataset
from orchestrator.core.recipes.loading import load_role

pytestmark = pytest.mark.slow


def test_fewshot_k1_trains_answers_and_compares(tiny_project: Path, made_eval, cli) -> None:
    project = tiny_project
    assert made_eval.done.returncode == 0, made_eval.done.stderr[-3000:]
    trained_runs(made_eval.project, project, "tiny-answer", merged=False)  # the plain model, trained
    (project / "recipes" / "fewshot-answer.yaml").write_text(
        "extends: tiny-answer.yaml\nname: tiny-answer-fs\ndataset:\n  name: train_answer_fs\nfewshot:\n  k: 1\n",
        encoding="utf-8")
    (project / "recipes" / "fewshot-pipeline.yaml").write_text(
        "extends: tiny-pipeline.yaml\ninference:\n  answer_recipe: recipes/fewshot-answer.yaml\n", encoding="utf-8")
    gold = {q.question: q.answer for q in read_dataset(project / "datasets" / "sample" / "train.jsonl").questions}

    def teacher_reply(prompt: str, request: dict) -> str:  # reaches the gold letter of the question asked
        asked = prompt.rpartition("### 问题:\n")[2]
        letter = next(a for question, a in gold.items() if asked.startswith(question))
        return f"### 思考思路:\n1. 推理\n### 可能的结果:\n{letter}"

    with FakeOpenAI(reply=teacher_reply) as teacher:  # the plain prompts come from the sample's cache
        code, _, err = cli("distill", "--pipeline", "recipes/fewshot-pipeline.yaml",
                           "--set", f"teacher.base_url={teacher.url}")
        assert code == 0, err
    adapter = ("--set", "serve.weights=adapter")
    fast = ("--set", "train.max_steps=4", *adapter)
    for command in ("dataset", "train"):
        code, _, err = cli(command, "answer", "--recipe", "recipes/fewshot-answer.yaml", *fast)
        assert code == 0, f"{command}: {err}"

    val = project / "datasets" / "val.jsonl"
    with FakeOpenAI(models=("ev",)) as evaluate:
        for name, recipe, sets in (("plain", "recipes/tiny-answer.yaml", adapter),
                                   ("fewshot", "recipes/fewshot-answer.yaml", fast)):
            code, _, err = cli("infer", val, "--out-dir", project / "runs" / name, "--pipeline",
                               "recipes/fewshot-pipeline.yaml", "--answer-recipe", recipe, "--evaluate-url",
                               evaluate.url, "--set", "inference.max_tokens=16", *sets)
            assert code == 0, err
    variant = load_role("answer", "recipes/fewshot-answer.yaml", ["train.max_steps=4"]).recipe.run_name
    assert variant.startswith("tiny-answer-fs@")
    plain, shot = (read_jsonl(project / "runs" / n / "trace.jsonl") for n in ("plain", "fewshot"))
    assert plain and all(r["answer"]["few_shot"] == {} for r in plain)
    trained = json.loads((project / "datasets" / "train_answer_fs.sources.json").read_text(encoding="utf-8"))
    examples = trained["fewshot"]["examples"]
    for r in shot:
        ids = r["answer"]["few_shot"][variant]  # train.max_steps set: the variant's run folder names it
        assert len(ids) == 1 and ids[0].rpartition("#")[0] != r["id"].rpartition("#")[0]
        assert r["id"] not in examples or examples[r["id"]] == ids  # the training prompt's example
        assert r["answer"]["samples"][0]["text"] is not None  # the served tiny model answered

    code, out, err = cli("compare", project / "runs" / "plain", project / "runs" / "fewshot", "--gold", val)
    assert code == 0, err
    assert "fewshot.k" in out
