"""`download`: skipped when a complete local copy exists; offline, one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.recipes.loading import load_role
from orchestrator.stages.download import COMPLETE, download


def test_local_model_path_is_used_as_is(tiny_project: Path) -> None:
    assert download(load_role("answer", "recipes/tiny-answer.yaml")) == (tiny_project / "models" / "tiny-qwen2").resolve()


def test_missing_local_model_path_says_where(project: Path, cli) -> None:
    code, out, err = cli("download", "answer", "--recipe", "recipes/tiny-answer.yaml")
    assert code == 2
    assert err.strip() == (
        "Error: model.path models/tiny-qwen2 holds no model (config.json and weights): put the model files there, "
        "or remove model.path to download qwen/Qwen2-7B-Instruct"
    )


def test_complete_copy_is_not_downloaded_again(project: Path, tiny_model_dir: Path) -> None:
    target = project / "models" / "qwen" / "Qwen2-7B-Instruct"
    target.mkdir(parents=True)
    for f in tiny_model_dir.iterdir():
        (target / f.name).symlink_to(f)
    (target / COMPLETE).write_text("qwen/Qwen2-7B-Instruct\n")
    assert download(load_role("answer")) == target  # no hub reached: it would fail here


def test_offline_download_is_one_clear_error(project: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: no hub here
    code, out, err = cli("download", "answer", "--set", "model.source=qwen/NoSuchModel")
    assert code == 2
    (line,) = [line for line in err.splitlines() if line.startswith("Error:")]  # modelscope logs its retries
    assert line.startswith("Error: cannot download qwen/NoSuchModel from modelscope (")
    assert line.endswith(f"put the model files in {project}/models/qwen/NoSuchModel (or set model.path in the recipe) and run again")
    assert not (project / "models" / "qwen" / "NoSuchModel").exists()
