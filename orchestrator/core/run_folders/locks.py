"""One command at a time per run folder: a second one that would write the same folder (two
trainings of one role, two infers into one --out-dir) refuses with one line instead of
corrupting it. The lock is the OS's (flock on <folder>/.lock), released when the process
ends, however it ends: a killed command leaves no stale lock behind."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import display

_HELD: dict[Path, int] = {}  # folder -> depth: a command that holds a folder's lock may nest it


@contextmanager
def run_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold `folder`'s lock for the block; refuse when another process holds it."""
    folder = Path(folder).resolve()
    if folder in _HELD:
        _HELD[folder] += 1
        try:
            yield
        finally:
            _HELD[folder] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 500).decode("utf-8", "replace").strip() or "another command"
            raise UserError(f"{display(folder)} is in use by {holder}: wait for it to finish "
                            "(one command at a time per run folder)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"`{what}` (pid {os.getpid()})".encode())
        _HELD[folder] = 1
        try:
            yield
        finally:
            del _HELD[folder]
    finally:
        os.close(fd)
