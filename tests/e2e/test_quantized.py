"""The quantized path for real on CPU (`make setup-quant`; `make test` installs it): a 4-bit GPTQ
tiny model, a LoRA trained on it and served as base + adapter by `llamafactory-cli api`, whose
merge is refused with LLaMA-Factory's reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import read_jsonl

from fake_openai import FakeOpenAI
from orchestrator.core.llamafactory.gptq import packed_weights

pytestmark = pytest.mark.slow

FAST = ("--set", "train.max_steps=5", "--set", "train.save_steps=5")


def _run(project: Path, *sets: str) -> Path:
    """The run folder of tiny-answer.yaml under these --set values: a variant's own
    (runs/tiny-answer@<hash>/, docs/experiments.md), the same for every command given them."""
    from orchestrator.core.recipes.loading import load_role

    return project / "runs" / load_role("answer", "recipes/tiny-answer.yaml", [v for v in sets if v != "--set"]).recipe.run_name


def _train(cli, *sets: str) -> None:
    code, _, err = cli("distill", "--pipeline", "recipes/tiny-pipeline.yaml")  # the sample's cached solutions
    assert code == 0, err
    for command in ("dataset", "train"):
        code, _, err = cli(command, "answer", "--recipe", "recipes/tiny-answer.yaml", *sets)
        assert code == 0, f"{command}: {err}"


def _infer(cli, project: Path, out: str, *sets: str, gptq: bool = True) -> list[dict]:
    with FakeOpenAI(models=("ev",)) as evaluate:
        code, _, err = cli("infer", "datasets/sample/test.jsonl", "--out-dir", project / "runs" / out, "--limit", "2",
                           "--pipeline", "recipes/tiny-pipeline.yaml", "--answer-recipe", "recipes/tiny-answer.yaml",
                           "--evaluate-url", evaluate.url, "--set", "inference.max_tokens=16", *sets)
    log = _run(project, *sets) / "serve.log"
    assert code == 0, err + (log.read_text(encoding="utf-8", errors="replace")[-3000:] if log.exists() else "")
    # a GPTQ model on CPU is served one request at a time (serving.one_at_a_time)
    assert ("one request at a time" in err) is gptq
    this_serve = log.read_text(encoding="utf-8").rsplit("\n$ ", 1)[-1]
    assert this_serve.count('"POST /v1/chat/completions HTTP/1.1" 200') == 8 + 1  # + the readiness request
    return read_jsonl(project / "runs" / out / "trace.jsonl")


def test_gptq_tiny_model_is_packed_4_bit(gptq_model_dir: Path) -> None:
    quantization = json.loads((gptq_model_dir / "config.json").read_text(encoding="utf-8"))["quantization_config"]
    assert quantization["quant_method"] == "gptq" and quantization["bits"] == 4
    assert "dataset" not in quantization  # optimum's copy of the calibration samples is dropped
    assert packed_weights(gptq_model_dir) == 2 * 7  # every linear layer of both blocks
    assert json.loads((gptq_model_dir / "config.json").read_text(encoding="utf-8"))["hidden_size"] == 128


def test_lora_on_the_gptq_base_trains_is_not_merged_and_answers_as_base_plus_adapter(
    project: Path, gptq_model_dir: Path, cli, capsys
) -> None:
    (project / "models").mkdir()
    os.symlink(gptq_model_dir, project / "models" / "tiny-qwen2-gptq")
    base = ("--set", "model.path=models/tiny-qwen2-gptq", *FAST)
    code, out, _ = cli("weights", "answer", "--recipe", "recipes/tiny-answer.yaml", *base)
    assert (code, out.strip()) == (0, "adapter")  # serve.weights auto on a GPTQ base

    _train(cli, *base)
    run = _run(project, *base)
    assert run.name.startswith("tiny-answer@") and not (project / "runs" / "tiny-answer").exists()  # a variant
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "Loading 4-bit GPTQ-quantized model." in log

    code, out, err = cli("merge", "answer", "--recipe", "recipes/tiny-answer.yaml", *base)
    assert code == 0, err
    assert "is GPTQ-quantized, which LLaMA-Factory cannot merge into" in err
    assert not (run / "merged").exists()

    # served on a CPU machine whose torch is CUDA-built: gptqmodel's CPU kernel (core/llamafactory/cpu_ddp)
    trace = _infer(cli, project, "gptq", *base)
    assert trace and all(r["answer"]["samples"][0]["text"] is not None for r in trace)
    serve = (run / "serve.yaml").read_text(encoding="utf-8")
    assert f"model_name_or_path: {(project / 'models' / 'tiny-qwen2-gptq').resolve()}\n" in serve
    assert "adapter_name_or_path:" in serve


def test_qlora_adapter_answers_on_the_4_bit_load_and_its_gptq_export_answers(
    project: Path, wide_tiny_model_dir: Path, cli
) -> None:
    """One QLoRA training (bitsandbytes nf4 on CPU): its adapter served on the 4-bit load it was
    trained on; then merged into the unquantized base and exported as a calibrated 4-bit GPTQ model."""
    (project / "models").mkdir()
    os.symlink(wide_tiny_model_dir, project / "models" / "tiny-qwen2")  # what tiny-answer.yaml trains on
    qlora = ("--set", "train.quantization_bit=4", *FAST)
    _train(cli, *qlora)
    run = _run(project, *qlora)
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "Quantizing model to 4 bit with bitsandbytes." in log

    trace = _infer(cli, project, "qlora", *qlora, "--set", "serve.weights=adapter", gptq=False)
    assert trace and all(r["answer"]["samples"][0]["text"] is not None for r in trace)
    serve = (run / "serve.yaml").read_text(encoding="utf-8")
    assert "adapter_name_or_path:" in serve and "quantization_bit: 4\n" in serve

    export = ("--set", "merge.export_quantization_bit=4", "--set", "merge.export_quantization_nsamples=8",
              "--set", "merge.export_quantization_maxlen=256")
    code, out, err = cli("merge", "answer", "--recipe", "recipes/tiny-answer.yaml", *qlora, *export)
    assert code == 0, err
    assert "a QLoRA adapter (train.quantization_bit 4): merged into the unquantized base" in err
    exported = _run(project, *qlora, *export)  # a merge-only variant: the training linked from `run`, not trained again
    assert exported != run and "launching" not in err
    merged = exported / "merged"
    quantization = json.loads((merged / "config.json").read_text(encoding="utf-8"))["quantization_config"]
    assert (quantization["quant_method"], quantization["bits"]) == ("gptq", 4)
    assert packed_weights(merged) == 2 * 7
    assert not list(exported.glob(".merged*"))  # no temporary folder left

    trace = _infer(cli, project, "gptq-export", *qlora, *export)
    assert trace and all(r["answer"]["samples"][0]["text"] is not None for r in trace)
    serve = (exported / "serve.yaml").read_text(encoding="utf-8")
    assert f"model_name_or_path: {merged}\n" in serve
    # docs/adapters.md's walk leaves the recipe's own model alone: every --set above was a variant
    assert not (project / "runs" / "tiny-answer").exists()


def test_the_memory_estimate_matches_the_real_checkpoints(gptq_model_dir: Path, wide_tiny_model_dir: Path) -> None:
    """Weights as core/serving/memory.py counts them, against the safetensors the tiny models really hold."""
    from orchestrator.core.serving.memory import model_shape

    for model in (gptq_model_dir, wide_tiny_model_dir):
        estimate = model_shape(json.loads((model / "config.json").read_text(encoding="utf-8"))).weight_bytes()
        size = sum(p.stat().st_size for p in model.glob("*.safetensors"))
        assert 0.95 < estimate / size < 1.02, model
