"""Serving base + adapter for real on the tiny model: `make all RECIPE=tiny` with
serve.weights adapter goes from the trained adapters to a submission with no merge (conftest's
made_adapter_all), and the adapter served on its base by `llamafactory-cli api` answers exactly as
its merged model does at temperature 0 (the session's trained pair: conftest's made_eval, trained
and merged once)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from helpers import make, trained_copy

from orchestrator.core.common.process import free_port
from orchestrator.core.data.competition import read_dataset
from orchestrator.core.data.prompts import answer_prompt
from orchestrator.core.recipes.loading import load_role
from orchestrator.core.serving.endpoints import Endpoint
from orchestrator.core.serving.servers import served

pytestmark = pytest.mark.slow

TINY = "recipes/tiny-answer.yaml"


async def _replies(url: str, model: str, prompts: list[str]) -> list[str]:
    async with Endpoint(url, model, "EMPTY", max_retries=0) as endpoint:
        return [(await endpoint.complete(p, temperature=0.0, max_tokens=24)).text for p in prompts]


def _served_replies(sets: list[str], prompts: list[str]) -> tuple[list[str], str]:
    loaded = load_role("answer", TINY, sets)
    with served(loaded, free_port()) as serving:
        replies = asyncio.run(_replies(serving.url, serving.model, prompts))
    return replies, (Path("runs/tiny-answer/serve.yaml")).read_text(encoding="utf-8")


@pytest.mark.xdist_group("adapters")  # conftest's made_adapter_all, built by one process
def test_make_infer_without_a_merge_and_adapter_replies_equal_the_merged_models(
    made_eval, made_adapter_all, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `make -j4 all RECIPE=tiny` with serve.weights adapter, from the trained pair less its merged models
    done = made_adapter_all.done
    assert done.returncode == 0, done.stderr[-3000:]
    # serve.weights is no input of a training: the planner trains and merges nothing, and says so
    assert "[run] train-tiny-evaluate: up to date" in done.stdout and "$ orchestrator merge" not in done.stdout
    assert "launching" not in done.stderr  # the trained adapters are current: nothing trained again
    tiny_project = trained_copy(made_adapter_all.project, tmp_path / "project")
    monkeypatch.chdir(tiny_project)
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(tiny_project))
    assert not list(tiny_project.rglob("merged")), "a merged model was written"
    submission = read_dataset(tiny_project / "runs/tiny-infer/submission.jsonl")
    test = read_dataset(tiny_project / "datasets/sample/test.jsonl")
    assert [q.qid for q in submission.questions] == [q.qid for q in test.questions]
    run = json.loads((tiny_project / "runs/tiny-infer/run.json").read_text(encoding="utf-8"))
    assert run["answer"]["agent"] == "serve runs/tiny-answer/adapter on its base"
    assert run["evaluate"]["agent"] == "serve runs/tiny-evaluate/adapter on its base"
    assert "$ orchestrator" not in make(tiny_project, "-n", "infer", "RECIPE=tiny").stdout  # up to date: the adapters end it

    # the same adapter served both ways: on its base, then merged into it (by made_eval's `make eval`)
    prompts = [answer_prompt(q) for q in test.questions[:4]]
    on_base, config = _served_replies([], prompts)
    base = (tiny_project / "models" / "tiny-qwen2").resolve()  # model.path, resolved
    adapter = tiny_project / "runs" / "tiny-answer" / "adapter"
    assert f"model_name_or_path: {base}\nadapter_name_or_path: {adapter}\n" in config
    shutil.copytree(made_eval.project / "runs/tiny-answer/merged", tiny_project / "runs/tiny-answer/merged")
    merged, config = _served_replies(["serve.weights=merged"], prompts)
    assert f"model_name_or_path: {tiny_project / 'runs/tiny-answer/merged'}\n" in config
    assert "adapter_name_or_path" not in config
    assert on_base == merged
    assert len(set(on_base)) > 1 or on_base[0].strip()  # real replies, not one empty string
