"""What a training leaves in runs/<name>/: its manifest (read here, by every stage, with one
error policy) and its adapter's identity by content (earlier trainings are kept by identity in
runs/<name>/kept/: core/run_folders/kept.py). Identities never name a timestamp or an absolute
path, so touching a file or moving the project changes none."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from orchestrator.core.common.paths import display, project_root
from orchestrator.core.run_folders.records import Manifest, read_manifest_in, read_merged_stamp
from orchestrator.core.run_folders.role_paths import ADAPTER_FILE, RolePaths

ADAPTER_CONFIG = "adapter_config.json"


def read_manifest(paths: RolePaths, role: str) -> Manifest | None:
    """The training manifest runs/<name>/manifest.json; None when there is none. An unreadable
    one is a UserError naming it and the fix, in every stage that reads it."""
    return read_manifest_in(paths.run_dir, f"`orchestrator train {role} --fresh` trains again, keeping "
                                           f"{display(paths.adapter)} in {display(paths.run_dir / 'kept')}/")


def files_hash(files: list[Path]) -> str:
    """A short hash of the names and content of `files` (read in blocks: adapters are large)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()[:16]


def adapter_hash(adapter: Path) -> str:
    """The adapter's identity: its weights and config, by content."""
    return files_hash([p for p in (adapter / ADAPTER_FILE, adapter / ADAPTER_CONFIG) if p.is_file()])


def adapter_identity(paths: RolePaths, role: str) -> str:
    """The trained adapter's identity as its manifest records it (hashed from the files for a
    manifest written before it did); `missing` without an adapter."""
    if not (paths.adapter / ADAPTER_FILE).is_file():
        return "missing"
    manifest = read_manifest(paths, role)
    recorded = manifest.adapter_hash if manifest else None
    return recorded or adapter_hash(paths.adapter)


def portable_hash(path: Path, base: Path, run_dir: Path | None = None) -> str:
    """A rendered config's hash without its comment lines, the project root, the base model's
    folder (and the run folder, when given) written as placeholders: the same config in a moved or
    re-mounted project, or in a variant's run folder, hashes the same."""
    text = "".join(line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
                   if not line.lstrip().startswith("#"))
    folders = [(str(base), "<base>"), (str(project_root()), "<project>")] + ([(str(run_dir), "<run>")] if run_dir else [])
    for folder, name in sorted(folders,
                               key=lambda pair: -len(pair[0])):
        text = text.replace(folder, name)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def base_identity(base: Path) -> dict[str, Any]:
    """A base model by content, cheaply: its config.json's hash and the names and sizes of its
    files (weights, tokenizer), never where it lies."""
    config = base / "config.json"
    files = sorted(p for p in base.iterdir() if p.is_file() and not p.name.startswith(".")) if base.is_dir() else []
    return {
        "config": files_hash([config]) if config.is_file() else None,
        "files": {p.name: p.stat().st_size for p in files},
    }


def merged_identity(paths: RolePaths) -> str | None:
    """The merged model's identity as merge recorded it (runs/<name>/merged/orchestrator.json);
    None when there is no merged model or no identity recorded (merge then merges again). An
    unreadable record is a UserError naming it."""
    stamp = read_merged_stamp(paths.merged)
    return stamp.identity if stamp and stamp.identity and (paths.merged / "config.json").is_file() else None
