"""Progress shown to people: tqdm bars on stderr and log lines under the stage name."""

from __future__ import annotations

import sys
from typing import Any


def bar(total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
        disable=None,  # quiet when stderr is not a terminal, e.g. in CI logs
    )


def say(stage: str, line: str) -> None:
    """One log line under the stage name, without breaking an active bar."""
    from tqdm import tqdm

    tqdm.write(f"[{stage}] {line}", file=sys.stderr)
