"""Questions per second of two-stage inference (pipelined: Answer + Evaluate) on the same tiny
trained pair served two ways, measured in one run: ONE vLLM server with both adapters on the
tiny base (--enable-lora: serve.weights adapter, serve.infer_backend vllm, infer's one-server
path) against two `llamafactory-cli api` servers (serve.infer_backend huggingface, base +
adapter each: infer's way without vLLM). The same questions (the sample's test file), the same
concurrency per endpoint (tiny-pipeline.yaml's inference.concurrency), greedy replies.

    .venv/bin/python benchmarks/bench_vllm.py [--project DIR] [--steps 20] [--limit N]

Without --project it builds what it needs in a temporary folder: the tiny model and the pair
trained for `--steps` LoRA steps (`make answer-model evaluate-model RECIPE=tiny`, adapters only).
--project reuses a project that has runs/tiny-answer/adapter and runs/tiny-evaluate/adapter.
The questions/s count the answering only (`orchestrator infer` against the servers' URLs);
the servers' start-up is printed apart. vLLM comes from .venv-vllm (`make setup-vllm`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROLES = {"answer": "recipes/tiny-answer.yaml", "evaluate": "recipes/tiny-evaluate.yaml"}
# what tests/e2e/test_vllm_engine.py serves: eager (no torch.compile warm-up on CPU), 2048 tokens
VLLM = ("serve.infer_backend=vllm", "serve.args.vllm_enforce_eager=true", "serve.args.vllm_maxlen=2048")


def build(folder: Path, steps: int) -> Path:
    """A tiny project with the pair trained for `steps` steps, adapters only (no merge)."""
    from orchestrator.stages.tiny_model import build_tiny_model

    root = folder / "project"
    shutil.copytree(REPO / "recipes", root / "recipes")
    shutil.copytree(REPO / "datasets" / "sample", root / "datasets" / "sample")
    shutil.copy(REPO / "Makefile", root)
    shutil.copy(REPO / "pyproject.toml", root)
    os.utime(root / "pyproject.toml", (0, 0))  # older than the install stamp: nothing reinstalled
    (root / ".venv").symlink_to(REPO / ".venv")
    build_tiny_model(root / "models" / "tiny-qwen2")
    recipe = root / ROLES["answer"]
    text = recipe.read_text(encoding="utf-8")
    for old, new in (("max_steps: 60", f"max_steps: {steps}"), ("serve:\n  port: 8011\n", "serve:\n  port: 8011\n  weights: adapter\n")):
        assert old in text, old
        text = text.replace(old, new)
    recipe.write_text(text, encoding="utf-8")
    started = time.perf_counter()
    done = subprocess.run(["make", "--no-print-directory", "answer-model", "evaluate-model", "RECIPE=tiny"], cwd=root,
                          capture_output=True, text=True, env={**os.environ, "ORCHESTRATOR_HOME": str(root)})
    if done.returncode != 0:
        sys.exit(f"Error: training the tiny pair failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    print(f"trained the tiny pair ({steps} steps each) in {time.perf_counter() - started:.0f} s")
    return root


def ask(root: Path, urls: tuple[str, str], out: str, concurrency: int, limit: int | None) -> tuple[float, int]:
    """`orchestrator infer` (pipelined) against the two URLs: seconds, questions answered."""
    from helpers import read_jsonl

    cmd = [str(REPO / ".venv" / "bin" / "orchestrator"), "infer", "datasets/sample/test.jsonl", "--out-dir", out,
           "--pipeline", "recipes/tiny-pipeline.yaml", "--mode", "pipelined",
           "--answer-url", urls[0], "--answer-model", "tiny-answer",
           "--evaluate-url", urls[1], "--evaluate-model", "tiny-evaluate",
           "--concurrency", str(concurrency), "--set", "inference.temperature=0", "--set", "inference.max_retries=0",
           *(["--limit", str(limit)] if limit else [])]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env={**os.environ, "ORCHESTRATOR_HOME": str(root)})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"Error: {' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    records = read_jsonl(root / out / "trace.jsonl")
    failed = [e for r in records for e in r["errors"] if e["kind"] in ("api", "not_asked")]
    if failed or not all(r["final"] for r in records):
        sys.exit(f"Error: {out}: requests failed: {failed[:3]}")
    return seconds, len(records)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", type=Path, help="a project with the trained tiny pair (adapters)")
    parser.add_argument("--steps", type=int, default=20, help="LoRA steps of each role when building")
    parser.add_argument("--limit", type=int, help="only the first N problems of the sample's test file")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    os.environ.setdefault("TQDM_DISABLE", "1")
    from contextlib import ExitStack

    from orchestrator.core.common.process import free_port
    from orchestrator.core.recipes.loading import load_pipeline, load_role
    from orchestrator.core.serving import vllm
    from orchestrator.core.serving.servers import served, served_adapters

    if vllm.installed() is None:
        sys.exit("Error: no vLLM: run `make setup-vllm` (it makes .venv-vllm)")
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp:
        root = build(Path(tmp), args.steps) if args.project is None else args.project.resolve()
        os.environ["ORCHESTRATOR_HOME"] = str(root)
        os.chdir(root)
        for role in ROLES:
            if not (root / f"runs/tiny-{role}/adapter").is_dir():
                sys.exit(f"Error: {root}/runs/tiny-{role}/adapter is missing: train the tiny pair there, or leave out --project")
        concurrency = load_pipeline(root / "recipes/tiny-pipeline.yaml").recipe.inference.concurrency
        print(f"{os.cpu_count()} cores, concurrency {concurrency} per endpoint, pipelined, temperature 0, "
              f"max_tokens 96, {'all' if args.limit is None else args.limit} problems of the sample's test file\n")
        results = {}
        for label, backend in (("vLLM, one server, both adapters (--enable-lora)", VLLM),
                               ("llamafactory-cli api, a server per adapter", ("serve.infer_backend=huggingface",))):
            loaded = [load_role(role, root / path, (*backend, "serve.weights=adapter")) for role, path in ROLES.items()]
            with ExitStack() as stack:
                started = time.perf_counter()
                if backend is VLLM:
                    one = stack.enter_context(served_adapters(loaded, free_port()))
                    urls = (one.url, one.url)
                else:
                    both = [stack.enter_context(served(x, free_port())) for x in loaded]
                    urls = (both[0].url, both[1].url)
                startup = time.perf_counter() - started
                out = f"runs/bench-{'vllm' if backend is VLLM else 'hf'}"
                shutil.rmtree(root / out, ignore_errors=True)
                seconds, questions = ask(root, urls, out, concurrency, args.limit)
            results[label] = questions / seconds
            print(f"{label}: start-up {startup:.0f} s; {questions} questions in {seconds:.1f} s = "
                  f"{questions / seconds:.2f} questions/s")
        vllm_rate, hf_rate = results.values()
        print(f"\nvLLM / llamafactory-cli api: {vllm_rate / hf_rate:.2f}x questions/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
