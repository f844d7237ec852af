"""Identity by content, in one place: what a planned stage is made from, hashed.

A stage's inputs are named values (`train.learning_rate`, `file datasets/x.json`, `base model`),
each with the place it comes from (a recipe file, the project state, a data file). Its identity is
a hash of the values alone: never a timestamp, never an absolute path, never where a value was
written (a key moved from a recipe to the recipe it extends is the same input). `changes` says,
input by input, what differs between two sets of inputs, as a person reads it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from orchestrator.core.common.paths import project_root

SHORT = 16  # hex digits of every identity: enough to tell two contents apart


class Input(BaseModel):
    """One input of a stage: its value as text (a content hash for a file) and where it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: str
    source: str = ""


Inputs = dict[str, Input]


def text_hash(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()[:SHORT]


def value_hash(value: Any) -> str:
    """A JSON-able value by content (keys sorted)."""
    return text_hash(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str))


def file_identity(path: Path) -> str | None:
    """A file by content (read in blocks); None when it is not there."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:SHORT]


def folder_identity(path: Path, small: int = 4 << 20) -> str | None:
    """A folder by its files' relative names and sizes, and the content of those up to `small`
    bytes (a model's weights are known by size; its configs and tokenizer by content); hidden
    files are left out. None when it is not there."""
    if not path.is_dir():
        return None
    parts = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        name = file.relative_to(path).as_posix()
        if any(part.startswith(".") for part in name.split("/")):
            continue
        size = file.stat().st_size
        parts.append([name, size, file_identity(file) if size <= small else None])
    return value_hash(parts)


def relative(path: Path | str) -> str:
    """A path as the project names it (relative to its root when inside it)."""
    path = Path(path)
    try:
        return (path if not path.is_absolute() else path.resolve().relative_to(project_root())).as_posix()
    except ValueError:
        return path.as_posix()


def file_input(path: Path | str, source: str = "") -> tuple[str, Input]:
    """`file <project-relative path>` -> its content hash (`missing` when it is not there)."""
    full = Path(path) if Path(path).is_absolute() else project_root() / path
    return f"file {relative(path)}", Input(value=file_identity(full) or "missing", source=source)


def flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    """A recipe's mapping as dotted keys -> leaf values (a list is one value)."""
    if isinstance(values, dict) and values:
        out: dict[str, Any] = {}
        for key, value in values.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: values} if prefix else {}


def value_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def identity(inputs: Inputs) -> str:
    """A stage's identity: its inputs' names and values, not where they came from."""
    return value_hash({name: item.value for name, item in sorted(inputs.items())})


def _shown(name: str, item: Input | None) -> str:
    if item is None:
        return "(none)"
    if name.startswith(("file ", "model ", "folder ")):
        return item.value
    return item.value


def changes(old: Inputs, new: Inputs) -> list[str]:
    """What differs, one phrase per input: `train.learning_rate 0.0001 -> 5e-05 (recipes/a.yaml)`,
    `file datasets/x.json changed (1a2b... -> 3c4d...)`."""
    out = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before is not None and after is not None and before.value == after.value:
            continue
        source = (after or before).source  # type: ignore[union-attr]
        where = f" ({source})" if source else ""
        if name.startswith(("file ", "folder ")):
            verb = "added" if before is None else "removed" if after is None else "changed"
            detail = "" if before is None or after is None else f" ({before.value[:8]} -> {after.value[:8]})"
            out.append(f"{name} {verb}{detail}{where}")
        elif before is None:
            out.append(f"{name} set to {_shown(name, after)}{where}")
        elif after is None:
            out.append(f"{name} no longer set (was {_shown(name, before)}){where}")
        else:
            out.append(f"{name} {_shown(name, before)} -> {_shown(name, after)}{where}")
    return out
