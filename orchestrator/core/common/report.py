"""What `score` and `compare` both write: Markdown and aligned text tables, and a matplotlib
figure as a PNG, written atomically like every file we write."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.core.common.files import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def md_table(head: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    """A Markdown table; `align` has one letter per column, r for right-aligned (default left)."""
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align.ljust(len(head), "l"))
    return ["| " + " | ".join(head) + " |", rule, *["| " + " | ".join(r) + " |" for r in rows]]


def text_table(head: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    """Columns two spaces apart; `align` has one letter per column, l for left-aligned (default:
    the first left-aligned, the others right-aligned)."""
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    align = align or "l".ljust(len(head), "r")
    return ["  ".join(x.ljust(w) if a == "l" else x.rjust(w) for x, w, a in zip(row, widths, align, strict=True)).rstrip()
            for row in (head, *rows)]


def save_png(fig: Figure, path: Path) -> Path:
    """The figure as a PNG at `path`: complete or absent."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return atomic_write_bytes(path, buffer.getvalue())
