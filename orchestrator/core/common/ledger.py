"""Crash-safe append-only JSONL, the resume point of distill and infer.

Every record is one line written by a single `os.write` on an O_APPEND descriptor, so a
SIGKILL leaves either the whole line or a torn tail. A torn tail is cut off when the ledger
is opened again; a record is keyed, and the last record of a key wins.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete JSON object line of `path` (a torn or invalid line is skipped)."""
    if not path.exists():
        return
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return
            try:
                record = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict):
                yield record


def _cut_torn_tail(path: Path) -> None:
    """Truncate `path` after its last newline, dropping a line a crash left half-written."""
    if not path.exists():
        return
    size = path.stat().st_size
    if size == 0:
        return
    with path.open("rb+") as f:
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
        # Walk back to the last newline.
        pos = size
        chunk = 65536
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            idx = block.rfind(b"\n")
            if idx >= 0:
                f.truncate(start + idx + 1)
                return
            pos = start
        f.truncate(0)


class Ledger:
    """Keyed records in a JSONL file; `records` holds the last record of every key."""

    def __init__(self, path: Path, key_field: str = "key", fsync: bool = False):
        self.path = Path(path)
        self.key_field = key_field
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(self.path)
        self.records: dict[str, dict[str, Any]] = {}
        for record in read_records(self.path):
            key = record.get(key_field)
            if isinstance(key, str):
                self.records[key] = record
        self._fd: int | None = None

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line, at once."""
        key = record[self.key_field]
        # backslashreplace: a lone surrogate (a model's half emoji) becomes the JSON escape
        # \udXXX it came from, instead of an exception that would lose the record
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "backslashreplace")
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self.fsync:
            os.fsync(self._fd)
        self.records[key] = record

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stable_key(**parts: Any) -> str:
    """A short hash of what determines a result (sorted JSON), used as a ledger key."""
    import hashlib

    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def text_hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]
