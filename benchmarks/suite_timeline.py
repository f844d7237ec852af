"""When each test ran, and on which pytest-xdist worker: a pytest plugin that logs each test's
start and end, and a summary of how busy the workers were (a worker with nothing left to run
while the other still works is where more workers, or another order, would help).

    .venv/bin/python -m pytest -p benchmarks.suite_timeline -q -m "slow or browser" -n 2 --dist loadgroup
    .venv/bin/python benchmarks/suite_timeline.py            # the summary of the last run

The log is SUITE_TIMELINE (default: .suite-timeline.jsonl in the working directory), one JSON
line per test: worker, test, start, end (seconds since the epoch)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

LOG = Path(os.environ.get("SUITE_TIMELINE", ".suite-timeline.jsonl"))
_started: dict[str, float] = {}
_logs = [True]  # False in the controller of workers: they log their own tests


def pytest_sessionstart(session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller starts the log afresh
        LOG.write_text("", encoding="utf-8")
        _logs[0] = not getattr(session.config.option, "numprocesses", None)


def pytest_runtest_logstart(nodeid: str, location) -> None:
    _started[nodeid] = time.time()


def pytest_runtest_logfinish(nodeid: str, location) -> None:
    if _logs[0]:
        row = {"worker": os.environ.get("PYTEST_XDIST_WORKER", "master"), "test": nodeid,
               "start": _started.pop(nodeid, time.time()), "end": time.time()}
        with LOG.open("a", encoding="utf-8") as f:  # one short line a write: whole under O_APPEND
            f.write(json.dumps(row) + "\n")


def summary(rows: list[dict]) -> str:
    first, last = min(r["start"] for r in rows), max(r["end"] for r in rows)
    by_worker: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_worker[r["worker"]].append(r)
    lines = [f"{len(rows)} tests on {len(by_worker)} workers in {last - first:.0f} s", "",
             "| worker | tests | busy s | done at s | its last tests (start s: test, s) |", "|---|---|---|---|---|"]
    for worker, mine in sorted(by_worker.items()):
        mine.sort(key=lambda r: r["start"])
        busy = sum(r["end"] - r["start"] for r in mine)
        tail = "; ".join(f"{r['start'] - first:.0f}: {r['test'].rsplit('::', 1)[-1][:48]}, {r['end'] - r['start']:.0f}"
                         for r in mine[-3:])
        lines.append(f"| {worker} | {len(mine)} | {busy:.0f} | {mine[-1]['end'] - first:.0f} | {tail} |")
    ends = sorted(mine[-1]["end"] for mine in by_worker.values())
    lines += ["", f"the first worker to run out of tests did so {ends[-1] - ends[0]:.0f} s before the last"]
    return "\n".join(lines)


def main() -> int:
    if not LOG.exists() or not LOG.read_text(encoding="utf-8").strip():
        print(f"no timeline in {LOG}: run pytest with -p benchmarks.suite_timeline first", file=sys.stderr)
        return 1
    rows = [json.loads(line) for line in LOG.read_text(encoding="utf-8").splitlines() if line.strip()]
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
