"""What a role serves (serve.weights): a base whose config.json declares a quantization is read
as such, with no model loaded and no GPU, and its adapter is served instead of a merged model."""

from __future__ import annotations

import pytest
from helpers import GPTQ, write_base

from orchestrator.core.llamafactory import base_quantization, served_weights
from orchestrator.core.recipes import load_role


# (the base's quantization_config, serve.weights, the quant_method read, what is served)
WEIGHTS = [
    pytest.param(None, "auto", None, "merged", id="plain-base-auto"),
    pytest.param(GPTQ, "auto", "gptq", "adapter", id="gptq-base-auto"),
    pytest.param({"quant_method": "AWQ", "bits": 4}, "auto", "awq", "adapter", id="awq-base-auto"),
    pytest.param({"bits": 4}, "auto", "unknown", "adapter", id="quantized-without-a-method"),
    pytest.param({}, "auto", None, "merged", id="empty-quantization-config"),
    pytest.param(None, "adapter", None, "adapter", id="plain-base-adapter"),
    pytest.param(None, "merged", None, "merged", id="plain-base-merged"),
    pytest.param(GPTQ, "adapter", "gptq", "adapter", id="gptq-base-adapter"),
]


@pytest.mark.parametrize("quantization, setting, method, served", WEIGHTS)
def test_served_weights_follow_the_bases_config(project, cli, quantization, setting, method, served):
    write_base(project, quantization)
    sets = ["model.path=models/base", f"serve.weights={setting}"]
    recipe = load_role("answer", "recipes/tiny-answer.yaml", sets).recipe
    assert (base_quantization(recipe), served_weights(recipe)) == (method, served)
    code, out, err = cli("weights", "answer", "--recipe", "recipes/tiny-answer.yaml", *[f"--set={s}" for s in sets])
    assert (code, out) == (0, f"{served}\n"), err


def test_a_base_not_downloaded_yet_is_served_merged_unless_told(project):
    recipe = load_role("answer", "recipes/answer.yaml").recipe
    assert not (project / "models" / "qwen").exists()
    assert (base_quantization(recipe), served_weights(recipe)) == (None, "merged")


@pytest.mark.parametrize("role", ["answer", "evaluate"])
def test_the_shipped_gptq_recipes_serve_their_adapters(project, cli, role):
    code, out, err = cli("weights", role, "--recipe", f"recipes/{role}-32b-gptq.yaml")
    assert (code, out) == (0, "adapter\n"), err
