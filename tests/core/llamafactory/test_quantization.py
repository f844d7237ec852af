"""What a role serves (serve.weights): a base whose config.json declares a quantization is read
as such, with no model loaded and no GPU, and its adapter is served instead of a merged model."""

from __future__ import annotations

import pytest
from helpers import GPTQ, write_base

from orchestrator.core.llamafactory.quantization import base_quantization, served_weights
from orchestrator.core.recipes.loading import load_role


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


# (model.source of a base not downloaded yet, the quant_method read from its name, what is served)
NOT_DOWNLOADED = [
    pytest.param(None, None, "merged", id="the-shipped-base"),
    pytest.param("Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4", "gptq", "adapter", id="gptq-by-name"),
    pytest.param("Qwen/Qwen2-72B-Instruct-AWQ", "awq", "adapter", id="awq-by-name"),
    pytest.param("someone/awqward-7b", None, "merged", id="a-word-that-only-contains-awq"),
]


@pytest.mark.parametrize("source, method, served", NOT_DOWNLOADED)
def test_a_base_not_downloaded_yet_is_judged_by_its_name(project, source, method, served):
    recipe = load_role("answer", "recipes/answer.yaml", [f"model.source={source}"] if source else []).recipe
    assert not (project / "models").exists()
    assert (base_quantization(recipe), served_weights(recipe)) == (method, served)


@pytest.mark.parametrize("role", ["answer", "evaluate"])
def test_the_shipped_gptq_recipes_serve_their_adapters(project, cli, role):
    code, out, err = cli("weights", role, "--recipe", f"recipes/{role}-32b-gptq.yaml")
    assert (code, out) == (0, "adapter\n"), err
