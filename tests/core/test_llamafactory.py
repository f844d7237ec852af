"""What a role serves (serve.weights): a base whose config.json declares a quantization is read
as such, with no model loaded and no GPU, and its adapter is served instead of a merged model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.core.llamafactory import base_quantization, served_weights
from orchestrator.core.recipes import load_role


def write_base(project: Path, quantization: dict | None, name: str = "base") -> Path:
    """A base model folder with only a config.json (Qwen2 keys; a quantization_config if given)."""
    base = project / "models" / name
    base.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64}
    if quantization is not None:
        config["quantization_config"] = quantization
    (base / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return base


GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128}

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


def test_the_shipped_gptq_recipe_serves_its_adapter(project, cli):
    code, out, err = cli("weights", "answer", "--recipe", "recipes/answer-32b-gptq.yaml")
    assert (code, out) == (0, "adapter\n"), err
