"""Several tiny trainings side by side on a few CPU cores, as the slow tests run them: torch's
default OpenMP threads against one thread a process (OMP_NUM_THREADS=1, what tests/conftest.py
sets). Each is the real `llamafactory-cli train` of recipes/tiny-answer.yaml's rendered config;
it prints each run's train_runtime (the Trainer's own figure, imports left out) and the ratio.

    .venv/bin/python benchmarks/bench_threads.py [--runs 3] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def orchestrator(project: Path, *args: str) -> None:
    subprocess.run([str(BIN / "orchestrator"), *args], cwd=project, check=True, capture_output=True,
                   env={**os.environ, "ORCHESTRATOR_HOME": str(project)})


def side_by_side(config: Path, runs: int, threads: str | None) -> list[float]:
    """`runs` trainings of `config` started together; each one's train_runtime in seconds."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads:
        env["OMP_NUM_THREADS"] = threads
    text = config.read_text(encoding="utf-8")
    procs, outs = [], []
    for i in range(runs):
        out = config.parent / f"bench-{threads or 'default'}-{i}"
        shutil.rmtree(out, ignore_errors=True)
        own = config.parent / f"bench-{i}.yaml"
        own.write_text("".join(f"output_dir: {out}\n" if line.startswith("output_dir:") else f"{line}\n"
                               for line in text.splitlines()), encoding="utf-8")
        procs.append(subprocess.Popen([str(BIN / "llamafactory-cli"), "train", str(own)], cwd=config.parent,
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        outs.append(out)
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"llamafactory-cli train exited with code {proc.returncode}")
    return [float(json.loads((out / "train_results.json").read_text())["train_runtime"]) for out in outs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="trainings side by side")
    parser.add_argument("--steps", type=int, default=20, help="LoRA steps each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        shutil.copytree(ROOT / "recipes", project / "recipes")
        shutil.copytree(ROOT / "datasets" / "sample", project / "datasets" / "sample")
        orchestrator(project, "tiny-model", "models/tiny-qwen2")
        orchestrator(project, "distill", "--pipeline", "recipes/tiny-pipeline.yaml")  # the sample's cached replies
        sets = ("--set", f"train.max_steps={args.steps}", "--set", f"train.save_steps={args.steps}")
        orchestrator(project, "dataset", "answer", "--recipe", "recipes/tiny-answer.yaml")
        orchestrator(project, "render", "answer", "--recipe", "recipes/tiny-answer.yaml", *sets)
        config = project / "runs" / "tiny-answer" / "train.yaml"
        print(f"{args.runs} tiny trainings of {args.steps} steps side by side on {os.cpu_count()} cores "
              "(train_runtime, s):", flush=True)
        figures = {}
        for label, threads in (("torch's default threads", None), ("OMP_NUM_THREADS=1", "1")):
            figures[label] = side_by_side(config, args.runs, threads)
            print(f"  {label:24s} {' '.join(f'{s:6.1f}' for s in figures[label])}   mean "
                  f"{sum(figures[label]) / args.runs:6.1f}", flush=True)
        default, one = (sum(v) / args.runs for v in figures.values())
        print(f"  one thread a process: {default / one:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
