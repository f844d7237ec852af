"""Which models share a server (core/serving/grouping.py): the one decision infer starts its
servers by and package ships its models by, on recipes with adapters on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.common.errors import UserError
from orchestrator.core.recipes.loading import load_role
from orchestrator.core.serving.grouping import SharedServer, plan_servers
from helpers import adapter_variant

VLLM_ADAPTER = {"backend": "vllm", "serve": {"weights": "adapter"}}
VLLM_MERGED = {"backend": "vllm", "serve": {"weights": "merged"}}
HF_ADAPTER = {"backend": "huggingface", "serve": {"weights": "adapter"}}
ENDPOINT = None

# (the Answer models, the Evaluate model, the servers as (members, lora), one server for everyone).
# Places: the Answer models 0.., then the Evaluate model.
PLANS = [
    pytest.param([VLLM_ADAPTER], VLLM_ADAPTER, [((0, 1), True)], True, id="every-model-an-adapter-of-one-base"),
    pytest.param([VLLM_ADAPTER, VLLM_ADAPTER], VLLM_ADAPTER, [((0, 1, 2), True)], True, id="three-adapters-one-server"),
    pytest.param([VLLM_ADAPTER, VLLM_ADAPTER], VLLM_MERGED, [((0, 1), True), ((2,), False)], False,
                 id="answer-adapters-share-evaluate-merged-alone"),
    pytest.param([VLLM_ADAPTER], VLLM_MERGED, [((0,), False), ((1,), False)], False, id="one-answer-adapter-alone"),
    pytest.param([HF_ADAPTER, HF_ADAPTER], HF_ADAPTER, [((0,), False), ((1,), False), ((2,), False)], False,
                 id="huggingface-never-shares"),
    pytest.param([VLLM_ADAPTER, ENDPOINT, VLLM_ADAPTER], ENDPOINT, [((0, 2), True), ((1,), False), ((3,), False)],
                 False, id="an-endpoint-between-shared-adapters"),
    pytest.param([VLLM_ADAPTER], ENDPOINT, [((0,), False), ((1,), False)], False, id="evaluate-an-endpoint"),
]


def _recipes(project: Path, answers: list[dict | None], evaluate: dict | None):
    def one(role: str, i: int, spec: dict | None):
        if spec is None:
            return None
        extends = "tiny-answer.yaml" if role == "answer" else "tiny-evaluate.yaml"
        return load_role(role, adapter_variant(project, f"{role}-{i}", 8, extends=extends, **spec))

    return [one("answer", i, s) for i, s in enumerate(answers)], one("evaluate", 0, evaluate)


@pytest.mark.parametrize("answers, evaluate, servers, everyone", PLANS)
def test_which_models_share_a_server(project: Path, answers, evaluate, servers, everyone) -> None:
    plan = plan_servers(*_recipes(project, answers, evaluate))
    assert [(s.members, s.lora) for s in plan.servers] == servers
    assert plan.everyone is everyone
    assert plan.answer_servers() == (plan.servers if everyone else plan.servers[:-1])


def test_the_answer_adapters_of_one_base_are_a_group_even_when_everyone_shares(project: Path) -> None:
    """infer names their cache identity by adapter: two Answer adapters of one base are a group."""
    plan = plan_servers(*_recipes(project, [VLLM_ADAPTER, VLLM_ADAPTER], VLLM_ADAPTER))
    assert plan.servers == (SharedServer((0, 1, 2), lora=True),) and plan.answer_groups == ((0, 1),)


def test_an_untrained_adapter_of_a_shared_server_is_refused(project: Path) -> None:
    answers, evaluate = _recipes(project, [VLLM_ADAPTER, VLLM_ADAPTER], VLLM_MERGED)
    (project / "runs" / "answer-1" / "adapter" / "adapter_config.json").unlink()
    with pytest.raises(UserError) as info:
        plan_servers(answers, evaluate)
    assert info.value.lines == [f"{project}/runs/answer-1/adapter has no trained adapter: "
                                "run `orchestrator train answer --recipe recipes/answer-1.yaml` first"]
