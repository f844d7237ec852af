"""The test suite's time as docs/benchmarks.md shows it: pytest's `--durations=0` report read
into the slowest tests and the total by folder, as Markdown tables.

    .venv/bin/python -m pytest -q -p no:cacheprovider --durations=0 | tee suite.txt
    .venv/bin/python benchmarks/suite_durations.py suite.txt --top 20

Setup, call and teardown of one test add up to its time (a session fixture's cost lands on the
first test that asks for it); pytest leaves out the ones under 5 ms."""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"^\s*([\d.]+)s (setup|call|teardown)\s+(\S+)")
SUMMARY = re.compile(r"=* ?(\d+ (?:passed|failed).*) in ([\d.]+)s")


def read(report: str) -> tuple[dict[str, float], str | None]:
    """Seconds by test id, and pytest's summary line (its counts and wall time) when there."""
    times: dict[str, float] = defaultdict(float)
    summary = None
    for line in report.splitlines():
        if m := LINE.match(line):
            times[m.group(3)] += float(m.group(1))
        elif m := SUMMARY.search(line):
            summary = f"{m.group(1)} in {float(m.group(2)):.0f} s"
    return times, summary


def folder(test: str) -> str:
    parts = test.split("::")[0].split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else parts[0]


def tables(times: dict[str, float], top: int) -> str:
    total = sum(times.values())
    by_folder: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for test, seconds in times.items():
        by_folder[folder(test)] += seconds
        count[folder(test)] += 1
    slowest = sorted(times.items(), key=lambda kv: -kv[1])[:top]
    lines = [f"| s | test (the {top} slowest of the {len(times)} pytest timed; {total:.0f} s in all) |", "|---|---|"]
    lines += [f"| {seconds:.1f} | {test} |" for test, seconds in slowest]
    lines += ["", "| folder | tests timed | s | share |", "|---|---|---|---|"]
    lines += [f"| {name} | {count[name]} | {seconds:.0f} | {seconds / total:.0%} |"
              for name, seconds in sorted(by_folder.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="pytest's output with --durations=0")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    times, summary = read(args.report.read_text(encoding="utf-8", errors="replace"))
    if not times:
        raise SystemExit(f"{args.report}: no durations in it: run pytest with --durations=0")
    if summary:
        print(f"pytest: {summary}\n")
    print(tables(times, args.top))


if __name__ == "__main__":
    main()
