"""Shared fixtures: a throwaway project directory, the tiny model, the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import REPO, install_fake_vllm, make, with_makefile  # noqa: E402


def _with_recipes_and_sample(root: Path) -> Path:
    shutil.copytree(REPO / "recipes", root / "recipes")
    shutil.copytree(REPO / "datasets" / "sample", root / "datasets" / "sample")
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root with the shipped recipes and sample, as the working directory."""
    _with_recipes_and_sample(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def spaced_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project ready for make (with_makefile) in a folder with a space and a quote in its name."""
    root = _with_recipes_and_sample(tmp_path / "my pro'ject")
    monkeypatch.chdir(root)
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(root))
    return with_makefile(root)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2-architecture model, built once per test session."""
    from orchestrator.stages.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2")


@pytest.fixture(scope="session")
def gptq_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model quantized for real (4-bit GPTQ) by `orchestrator tiny-model DIR --quantize
    gptq`, built once per test session."""
    out = tmp_path_factory.mktemp("models") / "tiny-qwen2-gptq"
    done = subprocess.run([str(REPO / ".venv" / "bin" / "orchestrator"), "tiny-model", str(out), "--quantize", "gptq"],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(out)
    return out


@pytest.fixture(scope="session")
def wide_tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model 128 wide (whole GPTQ groups of 128 in every layer: what a CPU serves a GPTQ
    export of), built once per test session."""
    from orchestrator.stages.tiny_model import QUANTIZED_WIDTH, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2-wide", width=QUANTIZED_WIDTH)


def _with_tiny_model(project: Path, tiny_model_dir: Path) -> Path:
    (project / "models").mkdir()
    os.symlink(tiny_model_dir, project / "models" / "tiny-qwen2")
    return project


@pytest.fixture
def tiny_project(project: Path, tiny_model_dir: Path) -> Path:
    """A project whose models/tiny-qwen2 is the tiny model (what the tiny recipes use)."""
    return _with_tiny_model(project, tiny_model_dir)


@dataclass
class Made:
    project: Path
    clean: bool  # the runs folder did not exist before
    done: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def made_eval(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Made:
    """`make eval RECIPE=tiny` once per test run, in a tiny project with no runs folder: it
    distils, builds both datasets, trains and merges both tiny models, then answers and scores
    the held-out problems. The tests that need trained models take them from here (read only)."""
    root = with_makefile(_with_tiny_model(_with_recipes_and_sample(tmp_path_factory.mktemp("made")), tiny_model_dir))
    clean = not (root / "runs").exists()
    return Made(root, clean, make(root, "eval", "RECIPE=tiny", timeout=1800))


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """Run `orchestrator ARGS...` in-process: (exit code, stdout, stderr)."""
    from orchestrator.cli import run

    def invoke(*args: str) -> tuple[int, str, str]:
        code = run([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def fake_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in `vllm` first on PATH (helpers.FAKE_VLLM); returns the file noting its calls."""
    calls = tmp_path / "vllm-calls.jsonl"
    install_fake_vllm(tmp_path / "bin", calls)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return calls
