"""The GPU check (run by benchmarks/gpu_check.sh): a randomly initialised model of the real
Qwen2-7B shape, built from the config below (no hub), trained with recipes/answer.yaml's settings
for a fixed number of steps, merged, served with `llamafactory-cli api`, asked 64 Answer prompts;
prints step time, tokens/s and peak GPU memory, and writes them to <work>/gpu_check.json.
Every stage is the project's own command (`orchestrator distill`, `dataset`, `train`, `merge`,
`serve`) in a throwaway project folder; the training set is the shipped sample, distilled
from its cached teacher replies (no network). `--tiny`: a 2-layer shape, on CPU."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Qwen2-7B's config.json (Qwen/Qwen2-7B-Instruct), less what a random model does not need.
QWEN2_7B = dict(
    hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
    num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rope_theta=1000000.0,
    rms_norm_eps=1e-6, tie_word_embeddings=False, hidden_act="silu",
)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=4096, max_position_embeddings=4096, tie_word_embeddings=True)

# on top of recipes/answer.yaml: a fixed number of steps, one save at the end, every step logged
CHECK_RECIPE = """extends: answer.yaml
name: gpu-check
model:
  name: Custom
  path: models/check
train:
  max_steps: {steps}
  save_steps: {steps}
  logging_steps: 1
  include_num_input_tokens_seen: true
{cpu}{merge}serve:
  port: {port}
"""
# on a GPU the merge runs there (answer.yaml merges on the CPU: minutes more for 15 GB)
GPU_MERGE = "merge:\n  export_device: auto\n"
# the CPU run of --tiny: no bf16, short sequences, no worker processes (as recipes/tiny-answer.yaml)
CPU_KEYS = "  bf16: null\n  cutoff_len: 512\n  preprocessing_num_workers: null\n  dataloader_num_workers: 0\n"


class PeakGpuMemory(threading.Thread):
    """The largest memory.used nvidia-smi reports while the check runs (MiB); None without a GPU."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        smi = shutil.which("nvidia-smi")
        while smi and not self.stop.wait(0.5):
            try:
                out = subprocess.run([smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10).stdout
                used = max(int(v) for v in out.split())
            except (OSError, ValueError, subprocess.SubprocessError):
                continue
            self.peak = max(self.peak or 0, used)


def orchestrator(*args: str, timeout: float = 3600) -> float:
    """Run one `orchestrator` command of this environment; its seconds."""
    started = time.monotonic()
    print(f"$ orchestrator {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "orchestrator", *args], check=True, timeout=timeout)
    return time.monotonic() - started


def build_model(out: Path, shape: dict, work: Path) -> float:
    """A random model of `shape` with the tiny model's tokenizer (built offline from the sample)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from orchestrator.stages.tiny_model import build_tiny_model

    started = time.monotonic()
    source = build_tiny_model(work / "models" / "tokenizer")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"):
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    tiny = json.loads((source / "config.json").read_text())
    config = Qwen2Config(**{**shape, "vocab_size": max(shape["vocab_size"], tiny["vocab_size"])},
                         eos_token_id=tiny["eos_token_id"], pad_token_id=tiny["pad_token_id"])
    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    dtype = torch.bfloat16 if cuda else torch.float32
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # 15 GB of bf16 weights for the 7B shape, never a float32 copy
    try:
        with torch.device("cuda" if cuda else "cpu"):  # initialised on the GPU: seconds, not minutes
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(out)
    del model
    if cuda:
        torch.cuda.empty_cache()
    return time.monotonic() - started


def ask(base: str, prompts: list[str], max_tokens: int, concurrency: int) -> tuple[float, int]:
    """Send every prompt to the served model; (seconds, completion tokens)."""
    from openai import OpenAI

    client = OpenAI(base_url=base, api_key="none", timeout=600, max_retries=0)

    def one(prompt: str) -> int:
        reply = client.chat.completions.create(model="gpu-check", messages=[{"role": "user", "content": prompt}],
                                               max_tokens=max_tokens, temperature=0)
        return reply.usage.completion_tokens if reply.usage else 0

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(one, prompts))
    return time.monotonic() - started, tokens


def answer_prompts(n: int) -> list[str]:
    from orchestrator.core.data.competition import read_dataset
    from orchestrator.core.data.prompts import answer_prompt

    questions = [q for p in read_dataset(REPO / "datasets/sample/test.jsonl").problems for q in p.questions]
    return [answer_prompt(questions[i % len(questions)]) for i in range(n)]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"orchestrator serve exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready after {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model of the same architecture, on CPU")
    parser.add_argument("--steps", type=int, help="training steps (default: 20; --tiny: 2)")
    parser.add_argument("--prompts", type=int, default=64, help="Answer prompts sent to the served model")
    parser.add_argument("--max-tokens", type=int, default=32, help="reply tokens per prompt")
    parser.add_argument("--work", type=Path, help="the throwaway project folder (default: a new temporary one)")
    args = parser.parse_args()
    steps = args.steps or (2 if args.tiny else 20)
    work = (args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))).resolve()

    from orchestrator.core.common.process import free_port

    shutil.copytree(REPO / "recipes", work / "recipes", dirs_exist_ok=True)
    shutil.copytree(REPO / "datasets" / "sample", work / "datasets" / "sample", dirs_exist_ok=True)
    port = free_port()
    (work / "recipes" / "gpu-check.yaml").write_text(
        CHECK_RECIPE.format(steps=steps, port=port, cpu=CPU_KEYS if args.tiny else "",
                            merge="" if args.tiny else GPU_MERGE), encoding="utf-8")
    os.environ["ORCHESTRATOR_HOME"] = str(work)
    os.chdir(work)
    memory = PeakGpuMemory()
    memory.start()
    started = time.monotonic()
    figures: dict = {"shape": "tiny" if args.tiny else "qwen2-7b", "steps": steps, "work": str(work)}

    figures["build_s"] = round(build_model(work / "models" / "check", TINY if args.tiny else QWEN2_7B, work), 1)
    recipe = ("--recipe", "recipes/gpu-check.yaml")
    sample = ("--input", "datasets/sample/train.jsonl")
    orchestrator("distill", "--recipe", "recipes/pipeline.yaml", *sample)  # the sample's cached replies
    orchestrator("dataset", "answer", *recipe, "--pipeline", "recipes/pipeline.yaml", *sample)
    figures["train_s"] = round(orchestrator("train", "answer", *recipe), 1)
    adapter = work / "runs" / "gpu-check" / "adapter"
    results = json.loads((adapter / "train_results.json").read_text())
    state = json.loads((adapter / "trainer_state.json").read_text())
    runtime = results["train_runtime"]
    figures["step_s"] = round(runtime / state["global_step"], 3)
    tokens = state.get("num_input_tokens_seen") or 0
    figures["train_tokens_per_s"] = round(tokens / runtime, 1) if tokens else None
    figures["merge_s"] = round(orchestrator("merge", "answer", *recipe), 1)

    serve = subprocess.Popen([sys.executable, "-m", "orchestrator", "serve", "answer", *recipe])
    try:
        load = time.monotonic()
        wait_ready(f"http://127.0.0.1:{port}/v1/models", serve, timeout=900)
        figures["serve_load_s"] = round(time.monotonic() - load, 1)
        seconds, generated = ask(f"http://127.0.0.1:{port}/v1", answer_prompts(args.prompts), args.max_tokens, 4)
    finally:
        serve.send_signal(signal.SIGTERM)  # orchestrator stops its llamafactory-cli api
        serve.wait(timeout=120)
    figures.update(prompts=args.prompts, answer_s=round(seconds, 1), reply_tokens=generated,
                   reply_tokens_per_s=round(generated / seconds, 1))
    memory.stop.set()
    memory.join()
    figures["peak_gpu_memory_mib"] = memory.peak
    figures["total_s"] = round(time.monotonic() - started, 1)
    (work / "gpu_check.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")

    peak = f"{memory.peak} MiB" if memory.peak is not None else "n/a (no GPU)"
    train_rate = f"{figures['train_tokens_per_s']} tokens/s" if figures["train_tokens_per_s"] else "tokens/s n/a"
    print(f"gpu-check ({figures['shape']}): step {figures['step_s']} s ({train_rate}) over {steps} steps; "
          f"{args.prompts} Answer prompts in {seconds:.1f} s ({figures['reply_tokens_per_s']} reply tokens/s); "
          f"peak GPU memory {peak}; total {figures['total_s']} s; figures: {work / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
