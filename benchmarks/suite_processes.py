"""Where the test suite's CPU goes, process by process: every Python process the venv starts
while pytest runs (the workers, each `orchestrator`, `llamafactory-cli`, torchrun rank, server)
logs its command, CPU time and whether it imported torch; the table sums them
by the test that started them.

    .venv/bin/python benchmarks/suite_processes.py --top 20 -- -q -m "slow or browser" -n 2 --dist loadgroup

It installs a .pth hook into the venv for the run and removes it after. A child is counted under
the test that was running when it started (it inherits PYTEST_CURRENT_TEST), so what a session
fixture starts in the background lands on its neighbours. A process killed by a signal, and one
that is not Python (make, bash, the browser), logs nothing: the summary compares the logged CPU
with the run's whole (getrusage of its children)."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import sysconfig
import tempfile
from collections import defaultdict
from pathlib import Path

HOOK = '''import atexit, json, os, resource, sys
with open(os.path.join({log!r}, f"{{os.getpid()}}.start"), "w") as f:
    json.dump({{"argv": sys.argv[:4], "test": os.environ.get("PYTEST_CURRENT_TEST")}}, f)
def _suite_process_done():
    try:
        r = resource.getrusage(resource.RUSAGE_SELF)
        with open(os.path.join({log!r}, f"{{os.getpid()}}.json"), "w") as f:
            json.dump({{"argv": sys.argv[:4], "test": os.environ.get("PYTEST_CURRENT_TEST"),
                       "cpu": r.ru_utime + r.ru_stime, "torch": "torch" in sys.modules}}, f)
    except Exception:
        pass
atexit.register(_suite_process_done)
'''


def table(rows: list[dict], top: int) -> str:
    by_test: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for row in rows:
        test = row["test"].rsplit(" ", 1)[0] if row["test"] else "(pytest and its workers)"
        counts = by_test[test]
        counts[0] += 1
        counts[1] += row["torch"]
        counts[2] += row["cpu"]
    lines = ["| CPU s | processes | of them importing torch | test |", "|---|---|---|---|"]
    for test, (n, torch, cpu) in sorted(by_test.items(), key=lambda kv: -kv[1][2])[:top]:
        lines.append(f"| {cpu:.0f} | {n:.0f} | {torch:.0f} | {test} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--list", metavar="TEST", help="also list each process of the tests whose name holds TEST")
    parser.add_argument("pytest_args", nargs="*", help="after --: pytest's arguments")
    args = parser.parse_args()
    site = Path(sysconfig.get_paths()["purelib"])
    hook, pth = site / "_suite_processes.py", site / "zz_suite_processes.pth"
    with tempfile.TemporaryDirectory(prefix="suite-processes-") as log:
        hook.write_text(HOOK.format(log=log), encoding="utf-8")
        pth.write_text("import _suite_processes\n", encoding="utf-8")
        try:
            rc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args.pytest_args]).returncode
        finally:
            pth.unlink(missing_ok=True)
            hook.unlink(missing_ok=True)
        ended = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in Path(log).glob("*.json")}
        rows = list(ended.values())
        # a process with a start and no end was stopped by a signal (a server): its CPU is unknown
        killed = [json.loads(p.read_text(encoding="utf-8")) for p in Path(log).glob("*.start") if p.stem not in ended]
    whole = resource.getrusage(resource.RUSAGE_CHILDREN)
    logged = sum(r["cpu"] for r in rows)
    print(table(rows, args.top))
    if args.list is not None:
        print()
        for row in sorted(rows + killed, key=lambda r: (r["test"] or "", -r.get("cpu", 0))):
            if args.list in (row["test"] or ""):
                cpu = f"{row['cpu']:6.1f}" if "cpu" in row else "killed"
                print(f"{cpu} {'torch' if row.get('torch') else '     '} {' '.join(row['argv'])[:150]}")
    print(f"\n{len(rows)} processes logged, {sum(r['torch'] for r in rows)} of them importing torch: {logged:.0f} s of CPU of the run's {whole.ru_utime + whole.ru_stime:.0f} s "
          f"(the rest: {len(killed)} processes killed by a signal, and not Python)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
