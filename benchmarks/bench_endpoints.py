"""Throughput of distillation and two-stage inference against a loopback OpenAI-compatible
server with a fixed latency, as a ratio to the ideal, all measured in one run.

    .venv/bin/python benchmarks/bench_endpoints.py [--latency 0.2] [--levels 1,8,32]

Ideal throughput: distill = concurrency / latency; pipelined inference = concurrency /
(2 x latency) (two calls per question, `concurrency` calls in flight). `--concurrency` bounds
each endpoint, and pipelined mode has two, so its ceiling is concurrency / latency: both
ratios are printed. The seed's way: one question at a time, both stages one after the other
= 1 / (2 x latency).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROUNDS = 20  # each level runs 20 latencies deep, so start-up costs stay small
sys.path.insert(0, str(REPO / "tests"))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "fake_openai.py"), "--port", "0", "--latency", str(latency)],
        stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline().strip()
    assert line.startswith("READY "), line
    return proc, line.split(" ", 1)[1]


def make_questions(path: Path, n: int) -> Path:
    lines = []
    per = 4
    for p in range((n + per - 1) // per):
        qs = [{"question": f"选择题 {i + 1}：\n问题 {p}-{i}?", "options": ["甲", "乙", "丙", "丁"], "answer": "A"}
              for i in range(min(per, n - p * per))]
        lines.append(json.dumps({"id": f"b{p:05d}", "problem": f"题目 {p}", "questions": qs}, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def project(tmp: Path) -> Path:
    root = Path(tempfile.mkdtemp(dir=tmp))
    shutil.copytree(REPO / "recipes", root / "recipes")
    os.environ["ORCHESTRATOR_HOME"] = str(root)
    os.chdir(root)
    return root


def bench_distill(url: str, tmp: Path, concurrency: int, latency: float) -> dict:
    from orchestrator.stages.distill import distill

    root = project(tmp)
    n = concurrency * ROUNDS
    data = make_questions(root / "train.jsonl", n)
    flags = (f"teacher.base_url={url}", "teacher.model=fake-model", "teacher.preload=[]", f"teacher.concurrency={concurrency}")
    cpu, start = cpu_seconds(), time.perf_counter()
    summary = distill(str(data), overrides=flags, echo=False)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    assert summary.asked == n, summary
    rate = n / wall
    return {"concurrency": concurrency, "questions": n, "seconds": wall, "rate": rate,
            "ideal": concurrency / latency, "cpu_ms": 1000 * cpu / summary.requests}


def bench_infer(url: str, tmp: Path, concurrency: int, latency: float) -> dict | None:
    try:
        from orchestrator.stages.infer import infer
    except ImportError:
        return None
    root = project(tmp)
    n = concurrency * ROUNDS
    data = make_questions(root / "test.jsonl", n)
    cpu, start = cpu_seconds(), time.perf_counter()
    infer(str(data), str(root / "out"), mode="pipelined", answer_url=url, evaluate_url=url,
          answer_model="fake-model", evaluate_model="fake-model", concurrency=concurrency)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    rate = n / wall
    return {"concurrency": concurrency, "questions": n, "seconds": wall, "rate": rate,
            "ideal": concurrency / (2 * latency), "seed": 1 / (2 * latency), "cpu_ms": 1000 * cpu / (2 * n)}


def startup_seconds(args: list[str], repeat: int = 3) -> float:
    exe = str(Path(sys.executable).parent / "orchestrator")
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([exe, *args], capture_output=True, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--levels", default="1,8,32")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    os.environ.setdefault("TQDM_DISABLE", "1")
    import openai  # noqa: F401  warm imports: the benchmark measures the steady state

    import orchestrator.stages.distill, orchestrator.core.serving.endpoints  # noqa: E401, F401
    server, url = start_server(args.latency)
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        print(f"loopback server latency {args.latency * 1000:.0f} ms, {os.cpu_count()} cores\n")
        print("| stage | concurrency | questions | seconds | questions/s | ideal | ratio to ideal | ratio to 2 endpoints' ideal | x seed's way | client CPU ms/request |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for c in levels:
            r = bench_distill(url, tmp, c, args.latency)
            print(f"| distill | {c} | {r['questions']} | {r['seconds']:.2f} | {r['rate']:.1f} | {r['ideal']:.1f} "
                  f"| {r['rate'] / r['ideal']:.2f} | – | – | {r['cpu_ms']:.2f} |")
        for c in levels:
            r = bench_infer(url, tmp, c, args.latency)
            if r is None:
                break
            print(f"| infer pipelined | {c} | {r['questions']} | {r['seconds']:.2f} | {r['rate']:.1f} | {r['ideal']:.1f} "
                  f"| {r['rate'] / r['ideal']:.2f} | {r['rate'] / (2 * r['ideal']):.2f} | {r['rate'] / r['seed']:.1f} | {r['cpu_ms']:.2f} |")
        print()
        print(f"start-up: `orchestrator --help` {startup_seconds(['--help']):.2f} s, "
              f"`orchestrator infer --help` {startup_seconds(['infer', '--help']):.2f} s")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
