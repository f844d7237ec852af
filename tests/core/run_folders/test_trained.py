"""What a training leaves (core/run_folders/trained.py) and the run folder's lock (core/run_folders/locks.py): identities
by content, paths as placeholders, nothing deleted before its replacement, one error policy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.core.common.errors import UserError
from orchestrator.core.run_folders.role_paths import RolePaths
from orchestrator.core.run_folders.trained import (
    adapter_hash,
    adapter_identity,
    base_identity,
    portable_hash,
    read_manifest,
)


def _trained(run: Path, weights: bytes = b"weights", manifest: str = '{"adapter_hash": null}') -> RolePaths:
    paths = RolePaths(run)
    paths.adapter.mkdir(parents=True)
    (paths.adapter / "adapter_model.safetensors").write_bytes(weights)
    (paths.adapter / "adapter_config.json").write_text('{"r": 4}')
    paths.manifest.write_text(manifest)
    return paths


@pytest.mark.parametrize("text, problem", [("{\"role\": \"ans", "not valid JSON"), ("[1, 2]", "not a JSON object")])
def test_an_unreadable_manifest_is_one_error_naming_it_and_the_fix(project: Path, text: str, problem: str) -> None:
    paths = _trained(project / "runs" / "tiny-answer", manifest=text)
    with pytest.raises(UserError) as info:
        read_manifest(paths, "answer")
    assert info.value.lines == [
        f"runs/tiny-answer/manifest.json is unreadable ({problem}): `orchestrator train answer --fresh` trains "
        "again, keeping runs/tiny-answer/adapter in runs/tiny-answer/kept/"]
    with pytest.raises(UserError):
        adapter_identity(paths, "answer")  # what infer keys answers on: the same error, never a guess
    assert (paths.adapter / "adapter_model.safetensors").exists()
    assert read_manifest(RolePaths(project / "runs" / "none"), "answer") is None


def test_identity_is_content_not_timestamps(tmp_path: Path) -> None:
    paths = _trained(tmp_path / "run")
    first = adapter_identity(paths, "answer")
    os.utime(paths.adapter / "adapter_model.safetensors", (0, 0))  # make's touch changes no identity
    assert adapter_identity(paths, "answer") == first == adapter_hash(paths.adapter)
    (paths.adapter / "adapter_model.safetensors").write_bytes(b"other weights")
    assert adapter_identity(paths, "answer") != first
    paths.manifest.write_text('{"adapter_hash": "recorded"}')  # recorded when trained: read, not hashed again
    assert adapter_identity(paths, "answer") == "recorded"


def test_portable_hash_ignores_where_the_project_and_base_lie(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashes = []
    for root, base in ((tmp_path / "a", tmp_path / "models/qwen"), (tmp_path / "b/c", Path("/mnt/m/qwen"))):
        root.mkdir(parents=True)
        monkeypatch.setenv("ORCHESTRATOR_HOME", str(root))
        (root / "train.yaml").write_text(f"# generated from {root}/recipes/answer.yaml\nmodel_name_or_path: {base}\n"
                                         f"dataset_dir: {root}/datasets\noutput_dir: {root}/runs/x/adapter\n")
        hashes.append(portable_hash(root / "train.yaml", base))
    assert hashes[0] == hashes[1]
    (root / "train.yaml").write_text((root / "train.yaml").read_text() + "lora_alpha: 16\n")
    assert portable_hash(root / "train.yaml", base) != hashes[1]


def test_base_identity_by_content_and_sizes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text('{"hidden_size": 8}')
        (tmp_path / name / "model.safetensors").write_bytes(b"x" * 10)
    assert base_identity(tmp_path / "a") == base_identity(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").write_bytes(b"x" * 11)
    assert base_identity(tmp_path / "a") != base_identity(tmp_path / "b")


def test_a_second_command_on_one_run_folder_refuses(tmp_path: Path) -> None:
    """Two real processes: the one holding runs/x/.lock, and this one."""
    from orchestrator.core.run_folders.locks import run_lock

    folder = tmp_path / "runs" / "x"
    code = ("import sys, time; from pathlib import Path; from orchestrator.core.run_folders.locks import run_lock\n"
            f"with run_lock(Path({str(folder)!r}), 'orchestrator train answer'):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as info:
            with run_lock(folder, "orchestrator train answer"):
                pass
        assert info.value.lines == [f"{folder} is in use by `orchestrator train answer` (pid {holder.pid}): wait for "
                                    "it to finish (one command at a time per run folder)"]
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while True:  # the lock went with the killed process
        try:
            with run_lock(folder, "again"), run_lock(folder, "nested in one command"):
                break
        except UserError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_the_bm25_index_is_named_by_its_parameters(project: Path) -> None:
    from orchestrator.core.data import fewshot
    from orchestrator.core.data.prompts import Example

    pool = [Example("p1#0", "甲比乙高", "谁最高", ("甲", "乙"), "甲"),
            Example("p2#0", "丙是丁的父亲", "丁的父亲是谁", ("丙", "丁"), "丙")]
    fewshot.Retriever(pool, project / "cache")
    assert sorted(p.name for p in (project / "cache").iterdir()) == [
        f"index-{fewshot.INDEX_KEY}.npz", f"vocab-{fewshot.INDEX_KEY}.json"]
    again = fewshot.Retriever(pool, project / "cache")  # read back from the cache
    assert again.search([("p3", "乙比甲高", "谁最高")], 1)[0][0].qid == "p1#0"
