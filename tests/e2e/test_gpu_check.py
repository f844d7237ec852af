"""benchmarks/gpu_check.sh --tiny: the GPU check's every stage (build, distil, train, merge,
serve, 64 Answer prompts) on CPU with a 2-layer shape, as the lent GPU machine will run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow


def test_gpu_check_tiny_runs_on_cpu(tmp_path: Path) -> None:
    work = tmp_path / "work"
    done = subprocess.run([str(REPO / "benchmarks" / "gpu_check.sh"), "--tiny", "--work", str(work)],
                          capture_output=True, text=True, timeout=900,
                          env={k: v for k, v in os.environ.items() if k != "ORCHESTRATOR_HOME"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    figures = json.loads((work / "gpu_check.json").read_text())
    assert (figures["shape"], figures["steps"], figures["prompts"]) == ("tiny", 2, 64)
    assert figures["step_s"] > 0 and figures["train_tokens_per_s"] > 0
    assert 0 < figures["reply_tokens"] <= 64 * 32 and figures["reply_tokens_per_s"] > 0
    if shutil.which("nvidia-smi") is None:
        assert figures["peak_gpu_memory_mib"] is None and "peak GPU memory n/a (no GPU)" in done.stdout
    state = json.loads((work / "runs/gpu-check/adapter/trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert (work / "runs/gpu-check/merged/config.json").exists()
    assert f"gpu-check (tiny): step {figures['step_s']} s" in done.stdout
