"""Writing DIR: each file a hard link where the file system allows (else a copy), a file already
the same left as it is, what an earlier package needed and this one does not removed, and the
MANIFEST of every file's sha256. A DIR without our MANIFEST is refused."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core.common.errors import UserError
from orchestrator.core.serving.memory import ServerEstimate

MANIFEST_HEADER = "# orchestrator package:"


@dataclass
class PackageSummary:
    out: Path
    files: int = 0
    linked: int = 0
    copied: int = 0
    written: int = 0  # generated files (recipes, run.sh, wheel, ...) new or changed
    unchanged: int = 0
    removed: int = 0
    total_bytes: int = 0
    folders: dict[str, int] = field(default_factory=dict)  # model folder -> bytes
    memory: list[ServerEstimate] = field(default_factory=list)
    peak_gb: float = 0.0
    budget_gb: float = 0.0

    def lines(self) -> list[str]:
        return [
            *(f"model {folder}: {size_text(n)}" for folder, n in self.folders.items()),
            *(f"memory {s.describe()}" for s in self.memory),
            f"memory peak {self.peak_gb:.1f} GB of package.gpu_memory_gb {self.budget_gb:g}",
            f"{self.files} files, {size_text(self.total_bytes)}: {self.linked} hard-linked, {self.copied} copied, "
            f"{self.written} written, {self.unchanged} unchanged, {self.removed} removed",
            f"image folder: {self.out} (docker build -t submission {self.out})",
        ]


def size_text(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def earlier_files(out: Path) -> set[str] | None:
    """The files an earlier `orchestrator package` wrote into `out`; None when `out` is new.
    Refuses a DIR that is not one of ours."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the image")
    manifest = out / "MANIFEST"
    if manifest.is_file():
        lines = manifest.read_text(encoding="utf-8", errors="replace").splitlines()
        if lines and lines[0].startswith(MANIFEST_HEADER):
            return {line.split("  ", 1)[1] for line in lines if line and not line.startswith("#") and "  " in line}
    if any(out.iterdir()):
        raise UserError(f"--out {out} is a folder that `orchestrator package` did not make (no MANIFEST of ours); "
                        "give a new or empty folder")
    return None


def place(src: Path, dest: Path, summary: PackageSummary) -> None:
    """`dest` as the same bytes as `src`: a hard link where possible, else a copy; a file
    already the same (the same inode, or size and modification time of a copy) is left."""
    if dest.exists():
        a, b = src.stat(), dest.stat()
        if (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev) or (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns):
            summary.unchanged += 1
            return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
        summary.linked += 1
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, tmp)
        summary.copied += 1
    os.replace(tmp, dest)


def write_bytes(dest: Path, data: bytes, summary: PackageSummary, mode: int | None = None) -> None:
    if dest.is_file() and dest.read_bytes() == data:
        summary.unchanged += 1
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_bytes(data)
    if mode is not None:
        tmp.chmod(mode)
    os.replace(tmp, dest)
    summary.written += 1
