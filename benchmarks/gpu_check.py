"""The GPU check (run by benchmarks/gpu_check.sh): a randomly initialised model of the real
Qwen2-7B shape, built from the config below (no hub), trained with recipes/answer.yaml's settings
for a fixed number of steps, merged, served with `llamafactory-cli api`, asked 64 Answer prompts;
prints step time, tokens/s and peak GPU memory, and writes them to <work>/gpu_check.json.
Every stage is the project's own command (`orchestrator distill`, `dataset`, `train`, `merge`,
`serve`) in a throwaway project folder; the training set is the shipped sample, distilled
from its cached teacher replies (no network). `--tiny`: a 2-layer shape, on CPU.

First it says which versions are in force and from where (the carried wheels in
benchmarks/.gpu-site or the machine's own), runs LLaMA-Factory's own version check, and writes the
machine's package list to <work>/machine-packages.txt (benchmarks/gpu_machine.txt's format). Then,
when gptqmodel and optimum are there, the quantized path: the tiny model quantized for real
(`orchestrator tiny-model --quantize gptq`, 4-bit GPTQ calibrated on the sample's Answer prompts),
a LoRA trained on it and served as base + adapter; without them it says so and skips it. Last,
where the check's Python has `vllm`, the merged model served again with vLLM's server
(serve.infer_backend vllm) and asked the same prompts; without it the check says so and skips it:
the lent GPU machine has no vLLM, and a run there carries at most 64 MiB of wheels (vLLM is far
larger than that)."""

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
from importlib.util import find_spec
from pathlib import Path

from gpu_wheels import GPTQMODEL_WAIVED, NOT_CARRIED, QUANT, canonical

REPO = Path(__file__).resolve().parent.parent
# the versions the check reports, and where each comes from
REPORTED = ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "tokenizers", "huggingface-hub",
            "safetensors", "llamafactory", *QUANT, "bitsandbytes")

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
# the quantized step: the same training and serving on a 4-bit GPTQ base, served as base + adapter
# (serve.weights auto: LLaMA-Factory merges no adapter into a quantized model)
GPTQ_RECIPE = """extends: gpu-check.yaml
name: gpu-check-gptq
model:
  path: models/check-gptq
serve:
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


def environment(work: Path) -> dict:
    """The versions in force and where each comes from; LLaMA-Factory's own version check (the
    carried wheels are its pins), run with no DISABLE_VERSION_CHECK; the carried packages'
    requirements the machine's versions miss; the machine's package list, to refresh
    benchmarks/gpu_machine.txt. Exits when LLaMA-Factory refuses the versions."""
    from importlib import metadata

    site = Path(os.environ["GPU_CHECK_SITE"]).resolve() if os.environ.get("GPU_CHECK_SITE") else None
    in_force: dict[str, str | None] = {}
    origin = []
    for name in REPORTED:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            in_force[name] = None
            origin.append(f"{name} (not installed)")
            continue
        in_force[name] = dist.version
        carried = site is not None and Path(str(dist.locate_file(""))).resolve() == site
        origin.append(f"{name} {dist.version}{' (carried)' if carried else ''}")
    print(f"gpu-check: Python {sys.version.split()[0]}, in force: {', '.join(origin)}", flush=True)
    unmet = unmet_requirements(site) if site else []
    for line in unmet:
        print(f"warning: {line}", flush=True)
    listed = subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    (work / "machine-packages.txt").write_text(listed.stdout, encoding="utf-8")

    os.environ.pop("DISABLE_VERSION_CHECK", None)
    from llamafactory.extras.misc import check_dependencies

    try:
        check_dependencies()
    except (RuntimeError, ImportError) as exc:
        raise SystemExit(f"Error: LLaMA-Factory's version check refuses this environment: {exc}\n"
                         "benchmarks/wheels carries the versions it takes: `make gpu-wheels` where there is network") from None
    return {"python": sys.version.split()[0], "versions": in_force, "unmet_requirements": unmet}


def unmet_requirements(site: Path) -> list[str]:
    """The requirements of the carried packages that the versions in force (carried first, then the
    machine's) miss; gptqmodel's that it runs without are left out (benchmarks/gpu_wheels.py)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    lines = []
    for dist in metadata.distributions(path=[str(site)]):
        name = canonical(dist.metadata["Name"])
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            if name == "gptqmodel" and canonical(requirement.name) in GPTQMODEL_WAIVED:
                continue
            try:
                found = metadata.version(requirement.name)
            except metadata.PackageNotFoundError:
                lines.append(f"{name} {dist.version} needs {requirement}: not installed")
                continue
            if not requirement.specifier.contains(found, prereleases=True):
                lines.append(f"{name} {dist.version} needs {requirement}: {found} is in force")
    return sorted(set(lines))


def quantization_missing() -> str | None:
    """Why the quantized step cannot run here, or None (imported in a process of its own)."""
    done = subprocess.run([sys.executable, "-c", "import optimum.gptq, gptqmodel"], capture_output=True, text=True)
    if done.returncode == 0:
        return None
    last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or [f"exit code {done.returncode}"]
    return f"optimum.gptq and gptqmodel do not import here ({last[0].strip()})"


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


def train_and_serve(recipe: tuple[str, str], port: int, prompts: list[str], max_tokens: int, run: str,
                    concurrency: int = 4) -> dict:
    """`orchestrator dataset`, `train` and `serve` of one recipe, then every prompt sent, `concurrency`
    at a time; its figures. A failed request shows the end of the server's log."""
    orchestrator("dataset", "answer", *recipe, "--pipeline", "recipes/pipeline.yaml", "--input", "datasets/sample/train.jsonl")
    figures: dict = {"train_s": round(orchestrator("train", "answer", *recipe), 1)}
    adapter = Path("runs") / run / "adapter"
    results = json.loads((adapter / "train_results.json").read_text())
    state = json.loads((adapter / "trainer_state.json").read_text())
    runtime = results["train_runtime"]
    figures["step_s"] = round(runtime / state["global_step"], 3)
    tokens = state.get("num_input_tokens_seen") or 0
    figures["train_tokens_per_s"] = round(tokens / runtime, 1) if tokens else None
    if run == "gpu-check":  # the quantized base is served as base + adapter: no merge
        figures["merge_s"] = round(orchestrator("merge", "answer", *recipe), 1)
    figures.update(serve_and_ask(recipe, port, prompts, max_tokens, run, concurrency))
    return figures


def serve_and_ask(recipe: tuple[str, ...], port: int, prompts: list[str], max_tokens: int, run: str,
                  concurrency: int, log_name: str = "serve.log") -> dict:
    """`orchestrator serve answer` of one trained recipe, every prompt sent; its figures."""
    figures: dict = {}
    serve = subprocess.Popen([sys.executable, "-m", "orchestrator", "serve", "answer", *recipe])
    try:
        load = time.monotonic()
        wait_ready(f"http://127.0.0.1:{port}/v1/models", serve, timeout=900)
        figures["serve_load_s"] = round(time.monotonic() - load, 1)
        try:
            seconds, generated = ask(f"http://127.0.0.1:{port}/v1", prompts, max_tokens, concurrency)
        except Exception:
            log = Path("runs") / run / log_name
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:] if log.exists() else []
            print(f"a request to {run} failed; the end of {log.resolve()}:", *tail, sep="\n", flush=True)
            raise
    finally:
        serve.send_signal(signal.SIGTERM)  # orchestrator stops its server
        serve.wait(timeout=120)
    figures.update(prompts=len(prompts), answer_s=round(seconds, 1), reply_tokens=generated,
                   reply_tokens_per_s=round(generated / seconds, 1))
    return figures


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def quantized_step(work: Path, steps: int, prompts: list[str], max_tokens: int, model: Path | None) -> dict:
    """The tiny model quantized (4-bit GPTQ), or the one `model` names, a LoRA trained on it,
    served as base + adapter."""
    from orchestrator.core.common.process import free_port
    from orchestrator.core.llamafactory.gptq import packed_weights

    port = free_port()
    (work / "recipes" / "gpu-check-gptq.yaml").write_text(GPTQ_RECIPE.format(port=port), encoding="utf-8")
    if model:
        (work / "models" / "check-gptq").symlink_to(model.resolve())
        quantize_s = None
    else:
        quantize_s = round(orchestrator("tiny-model", "models/check-gptq", "--quantize", "gptq"), 1)
    figures = {"quantize_s": quantize_s, "packed_qweights": packed_weights(work / "models" / "check-gptq")}
    # On CPU one request at a time: 4 at once got one HTTP 500 in three runs here (a loaded 2-core
    # machine, after serve's warm-up request; cause not established, the log was lost)
    figures.update(train_and_serve(("--recipe", "recipes/gpu-check-gptq.yaml"), port, prompts, max_tokens,
                                   "gpu-check-gptq", concurrency=4 if torch_cuda() else 1))
    log = (work / "runs" / "gpu-check-gptq" / "train.log").read_text(encoding="utf-8", errors="replace")
    if "Loading 4-bit GPTQ-quantized model." not in log:
        raise SystemExit("the quantized step's training did not load the GPTQ base (runs/gpu-check-gptq/train.log)")
    return figures


def vllm_missing() -> str | None:
    """Why the vLLM step cannot run here, None when it can."""
    if find_spec("vllm") is None:
        return (f"{sys.executable} has no vllm: the lent GPU machine has none, and a run there carries at most "
                "64 MiB of wheels (vLLM is far larger); the check runs this step where `vllm` is already installed")
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model of the same architecture, on CPU")
    parser.add_argument("--steps", type=int, help="training steps (default: 20; --tiny: 2)")
    parser.add_argument("--prompts", type=int, default=64, help="Answer prompts sent to the served model")
    parser.add_argument("--gptq-prompts", type=int, default=16, help="Answer prompts sent to the GPTQ base + adapter")
    parser.add_argument("--max-tokens", type=int, default=32, help="reply tokens per prompt")
    parser.add_argument("--work", type=Path, help="the throwaway project folder (default: a new temporary one)")
    parser.add_argument("--gptq-model", type=Path, help="a tiny model `orchestrator tiny-model DIR --quantize gptq` "
                        "built, trained on instead of quantizing one (the tests pass the session's)")
    args = parser.parse_args()
    steps = args.steps or (2 if args.tiny else 20)
    work = (args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    figures: dict = {"shape": "tiny" if args.tiny else "qwen2-7b", "steps": steps, "work": str(work)}
    figures["environment"] = environment(work)

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

    figures["build_s"] = round(build_model(work / "models" / "check", TINY if args.tiny else QWEN2_7B, work), 1)
    orchestrator("distill", "--pipeline", "recipes/pipeline.yaml", "--input", "datasets/sample/train.jsonl")  # cached replies
    figures.update(train_and_serve(("--recipe", "recipes/gpu-check.yaml"), port, answer_prompts(args.prompts),
                                   args.max_tokens, "gpu-check"))
    missing = quantization_missing()
    figures["gptq"] = None if missing else quantized_step(work, steps, answer_prompts(args.gptq_prompts),
                                                          args.max_tokens, args.gptq_model)
    figures["gptq_skipped"] = missing
    figures["vllm_skipped"] = vllm_missing()
    figures["vllm"] = None if figures["vllm_skipped"] else serve_and_ask(
        ("--recipe", "recipes/gpu-check.yaml", "--set", "serve.infer_backend=vllm"), port,
        answer_prompts(args.prompts), args.max_tokens, "gpu-check", 4, log_name="serve-vllm.log")
    figures["not_checked"] = [why for name, why in NOT_CARRIED.items() if figures["environment"]["versions"].get(name) is None]
    memory.stop.set()
    memory.join()
    figures["peak_gpu_memory_mib"] = memory.peak
    figures["total_s"] = round(time.monotonic() - started, 1)
    (work / "gpu_check.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")

    peak = f"{memory.peak} MiB" if memory.peak is not None else "n/a (no GPU)"
    train_rate = f"{figures['train_tokens_per_s']} tokens/s" if figures["train_tokens_per_s"] else "tokens/s n/a"
    print(f"gpu-check ({figures['shape']}): step {figures['step_s']} s ({train_rate}) over {steps} steps; "
          f"{args.prompts} Answer prompts in {figures['answer_s']:.1f} s ({figures['reply_tokens_per_s']} reply tokens/s); "
          f"peak GPU memory {peak}; total {figures['total_s']} s; figures: {work / 'gpu_check.json'}")
    gptq = figures["gptq"]
    if gptq:
        made = (f"quantized to 4 bits in {gptq['quantize_s']} s" if gptq["quantize_s"] is not None
                else f"4-bit GPTQ, from {args.gptq_model}")
        print(f"gpu-check GPTQ base + LoRA: the tiny model {made} "
              f"({gptq['packed_qweights']} packed qweights), step {gptq['step_s']} s over {steps} steps, served as base + "
              f"adapter: {gptq['prompts']} Answer prompts in {gptq['answer_s']:.1f} s ({gptq['reply_tokens_per_s']} reply tokens/s)")
    else:
        print(f"gpu-check GPTQ base + LoRA: skipped, {missing}; benchmarks/wheels carries gptqmodel and optimum "
              "(`make gpu-wheels`), `make setup-quant` installs them here")
    if figures["vllm"]:
        print(f"gpu-check vLLM: the merged model served by vLLM's server: {figures['vllm']['prompts']} Answer prompts "
              f"in {figures['vllm']['answer_s']:.1f} s ({figures['vllm']['reply_tokens_per_s']} reply tokens/s)")
    else:
        print(f"gpu-check vLLM: skipped, {figures['vllm_skipped']}")
    for why in figures["not_checked"]:
        print(f"gpu-check: not checked: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
