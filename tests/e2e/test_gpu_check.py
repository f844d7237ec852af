"""benchmarks/gpu_check.sh --tiny: the GPU check's every stage (versions, build, distil, train,
merge, serve, Answer prompts: 4 here, 64 on the GPU machine; then the GPTQ base + LoRA, served,
when the quantization packages are there, as `make test` installs them) on CPU with a 2-layer
shape, as the lent GPU machine will run it."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO


def test_a_python_without_the_packages_is_one_error_line(tmp_path: Path) -> None:
    """The packages found, not imported (seconds of CPU each): the venv's base Python has none of them."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    script = tmp_path / "benchmarks" / "gpu_check.sh"  # beside no benchmarks/wheels: nothing installed
    script.parent.mkdir()
    shutil.copy(REPO / "benchmarks" / "gpu_check.sh", script)
    done = subprocess.run([str(script), "--tiny", "--work", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHON": str(base)})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"Error: {base} lacks torch, transformers, peft or llamafactory; run `make gpu-wheels` "
                           "where there is network and bring benchmarks/wheels/\n")


@pytest.mark.slow
def test_gpu_check_tiny_runs_on_cpu(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    work = tmp_path / "work"
    quantized = all(importlib.util.find_spec(name) for name in ("gptqmodel", "optimum"))
    # fewer prompts than the GPU machine's 64 and 16, and the session's GPTQ tiny model (the same
    # `orchestrator tiny-model --quantize gptq`): the same path in less of the CPU's time
    gptq_model = request.getfixturevalue("gptq_model_dir") if quantized else None
    done = subprocess.run([str(REPO / "benchmarks" / "gpu_check.sh"), "--tiny", "--work", str(work),
                           "--prompts", "4", "--gptq-prompts", "2", *(["--gptq-model", str(gptq_model)] * quantized)],
                          capture_output=True, text=True, timeout=1800,
                          env={k: v for k, v in os.environ.items() if k != "ORCHESTRATOR_HOME"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    figures = json.loads((work / "gpu_check.json").read_text())
    assert (figures["shape"], figures["steps"], figures["prompts"]) == ("tiny", 2, 4)
    assert figures["step_s"] > 0 and figures["train_tokens_per_s"] > 0
    assert 0 < figures["reply_tokens"] <= 4 * 32 and figures["reply_tokens_per_s"] > 0
    if shutil.which("nvidia-smi") is None:
        assert figures["peak_gpu_memory_mib"] is None and "peak GPU memory n/a (no GPU)" in done.stdout
    state = json.loads((work / "runs/gpu-check/adapter/trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert (work / "runs/gpu-check/merged/config.json").exists()
    assert f"gpu-check (tiny): step {figures['step_s']} s" in done.stdout

    # what is in force, said first; LLaMA-Factory's own version check passed; the machine's list kept
    assert done.stdout.startswith("gpu-check: Python ") and "transformers 5.6.0" in done.stdout.splitlines()[0]
    assert figures["environment"]["versions"]["llamafactory"] == "0.9.5"
    assert "llamafactory==0.9.5" in (work / "machine-packages.txt").read_text().splitlines()

    # the quantized path: a real 4-bit GPTQ tiny model, a LoRA trained on it, served as base + adapter
    if quantized:
        gptq = figures["gptq"]
        assert figures["gptq_skipped"] is None and gptq["packed_qweights"] == 2 * 7
        assert gptq["step_s"] > 0 and 0 < gptq["reply_tokens"] <= 2 * 32
        serve = (work / "runs/gpu-check-gptq/serve.yaml").read_text()
        assert "adapter_name_or_path:" in serve and not (work / "runs/gpu-check-gptq/merged").exists()
        assert gptq["quantize_s"] is None
        assert f"gpu-check GPTQ base + LoRA: the tiny model 4-bit GPTQ, from {gptq_model} (14 packed" in done.stdout
    else:
        assert figures["gptq"] is None and "gpu-check GPTQ base + LoRA: skipped, " in done.stdout
    # no vllm in the check's Python (.venv here, as on the lent GPU machine): it says so and skips that step
    assert figures["vllm"] is None and "64 MiB of wheels" in figures["vllm_skipped"]
    assert "gpu-check vLLM: skipped, " in done.stdout and " has no vllm: the lent GPU machine has none" in done.stdout
