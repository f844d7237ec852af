"""Shared fixtures: a throwaway project directory, the tiny model, the CLI."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import REPO, install_fake_vllm  # noqa: E402


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root with the shipped recipes and sample, as the working directory."""
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    shutil.copytree(REPO / "datasets" / "sample", tmp_path / "datasets" / "sample")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2-architecture model, built once per test session."""
    from orchestrator.stages.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2")


@pytest.fixture
def tiny_project(project: Path, tiny_model_dir: Path) -> Path:
    """A project whose models/tiny-qwen2 is the tiny model (what the tiny recipes use)."""
    (project / "models").mkdir()
    os.symlink(tiny_model_dir, project / "models" / "tiny-qwen2")
    return project


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
