"""Atomic writes: a file is complete or absent, never half-written; and a content hash."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str, errors: str = "strict") -> Path:
    return atomic_write_bytes(path, text.encode("utf-8", errors))


# JSON: a lone surrogate can only sit inside a string, where backslashreplace writes the
# \udXXX escape that reads back as the same text.
def atomic_write_json(path: Path, data: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=indent) + "\n", "backslashreplace")


def atomic_write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    return atomic_write_text(
        path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "backslashreplace"
    )


def file_hash(path: Path) -> str:
    """A short content hash: enough to tell that a file changed."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object file as a dict; {} when it is missing, unreadable or not an object (a record
    another tool wrote, read for what it may tell)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
