"""Progress shown to people: a tqdm bar on a terminal, a line every few seconds in a log."""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Any

LOG_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal
VERBOSE_ENV = "ORCHESTRATOR_VERBOSE"  # set (by -v, or by hand) to stream every line of a tool's output

# What a quiet run shows of a tool's output: evaluation losses, the final training summary,
# warnings and errors. The running loss is on the step bar (and in training_loss.png).
_WORTH_SHOWING = re.compile(
    r"""^\s*\{'(?:eval_loss|train_runtime)'"""  # transformers' Trainer.log dicts
    r"|\b(?:WARNING|WARN|ERROR|CRITICAL|FATAL)\b|\w*(?:Warning|Error|Exception)\b|^Traceback"
)
_TQDM_LINE = re.compile(r"\d+%\|.*\|")  # a progress bar's redraw: our own bar shows progress
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # terminal control codes, e.g. tqdm's cursor-up before a log dict
# Known noise on every CPU run (and gptqmodel's banner wherever it is installed, even for a plain
# LoRA training); it stays in the log file.
_NOISE = re.compile(r"'pin_memory' argument is set as true but no accelerator is found"
                    r"|WARN\s+Python GIL is enabled: Multi-gpu quant acceleration")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def clean(line: str) -> str:
    """The line without terminal control codes."""
    return _ESCAPE.sub("", line)


def worth_showing(line: str) -> bool:
    """Whether a line of a tool's output reaches the terminal (all of it goes to the log file)."""
    line = clean(line)
    if not line.strip() or _TQDM_LINE.search(line) or _NOISE.search(line):
        return False
    return verbose() or bool(_WORTH_SHOWING.search(line))


class LogBar:
    """The part of tqdm's interface the stages use, as periodic `[stage] n/total` lines."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.postfix: dict[str, Any] = {}
        self.start = self.last = time.monotonic()
        self.shown: tuple[int, str] | None = None  # the state last printed: never printed twice

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = values

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self.last >= LOG_EVERY and self.shown != (self.n, self._extra()):  # a line when something moved
            self.last = now
            self._line()

    def _extra(self) -> str:
        return "".join(f", {k} {v}" for k, v in self.postfix.items())

    def _line(self) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        say(self.desc, f"{done} {self.unit} ({self.n / elapsed:.1f} {self.unit}/s{self._extra()})")
        self.shown = (self.n, self._extra())

    def close(self) -> None:
        if self.shown != (self.n, self._extra()):
            self._line()


def bar(total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Any:
    if not sys.stderr.isatty():
        return LogBar(total, desc, unit, initial)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


def say(stage: str, line: str) -> None:
    """One log line under the stage name, without breaking an active bar."""
    from tqdm import tqdm

    tqdm.write(f"[{stage}] {line}", file=sys.stderr)
