"""What the image serves: the servers `orchestrator infer` starts for the recipes, as it groups
them (core/serving/grouping.py), each with its model folder; and their GPU memory, estimated
before anything is copied."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.common.errors import UserError
from orchestrator.core.llamafactory.quantization import served_weights
from orchestrator.core.recipes.loading import Loaded, command_for
from orchestrator.core.recipes.schema import PipelineRecipe, RoleRecipe
from orchestrator.core.run_folders.kept import check_out
from orchestrator.core.run_folders.role_paths import ADAPTER_FILE, is_trained, model_path, role_paths
from orchestrator.core.serving.grouping import plan_servers
from orchestrator.core.serving.vllm import serve_arg
from orchestrator.core.serving.memory import ConfigError, ServerEstimate, server_estimate


@dataclass(frozen=True)
class ImageServer:
    """One model server in the image: a merged model, or a base with the adapters vLLM serves."""

    name: str
    model: Path  # the directory with config.json
    recipes: tuple[Loaded[RoleRecipe], ...]
    adapters: tuple[Path, ...] = ()


def image_servers(answers: list[Loaded[RoleRecipe]], evaluate: Loaded[RoleRecipe]) -> list[ImageServer]:
    """The servers `orchestrator infer` starts for these recipes, as it groups them
    (core/serving/grouping.py). Refuses a model that is not trained, merged or downloaded yet."""
    every = [*answers, evaluate]
    servers = [_base_server([every[i] for i in s.members]) if s.lora else _single(every[s.members[0]])
               for s in plan_servers(answers, evaluate).servers]
    for s in servers:
        if not (s.model / "config.json").exists():
            raise UserError(f"no base model in {s.model} to serve the adapter of {s.name} on: "
                            f"run `{command_for(s.recipes[0], 'download')}`")
    return servers


def _base_server(group: list[Loaded[RoleRecipe]]) -> ImageServer:
    """One vLLM server of a base with the adapters of `group`."""
    return ImageServer("+".join(x.recipe.run_name for x in group), model_path(group[0].recipe), tuple(group),
                       tuple(role_paths(x.recipe).adapter for x in group))


def _single(loaded: Loaded[RoleRecipe]) -> ImageServer:
    """The server of one role's model: its merged model, or its base with the adapter on top."""
    paths = role_paths(loaded.recipe)
    if not is_trained(paths):
        check_out(paths.run_dir.name)  # a kept training named by `orchestrator runs`: linked into its folder
    if served_weights(loaded.recipe) == "adapter":
        if not is_trained(paths):
            raise UserError(f"{paths.adapter} has no trained adapter (no {ADAPTER_FILE}) to serve on the base: "
                            f"run `{command_for(loaded, 'train')}` first")
        return ImageServer(loaded.recipe.run_name, model_path(loaded.recipe), (loaded,), (paths.adapter,))
    if not (paths.merged / "config.json").exists():
        raise UserError(f"{paths.merged} has no merged model: run `{command_for(loaded, 'merge')}` first")
    return ImageServer(loaded.recipe.run_name, paths.merged, (loaded,))


VLLM_SERVE_GPU_UTIL = 0.9  # `vllm serve`'s own --gpu-memory-utilization


def _gpu_util(s: ImageServer) -> float | None:
    """The share of the card a vLLM server takes (None: not vLLM); several adapters: `vllm serve`."""
    recipe = s.recipes[0].recipe
    if recipe.serve.infer_backend != "vllm":
        return None
    if len(s.adapters) > 1 and recipe.serve.args.get("vllm_gpu_util") is None:
        return VLLM_SERVE_GPU_UTIL
    return float(serve_arg(recipe, "vllm_gpu_util"))


def memory_estimates(servers: list[ImageServer], pipeline: PipelineRecipe) -> list[ServerEstimate]:
    """Each server's GPU memory from its config.json, the recipe's vllm_maxlen, the requests in
    flight (inference.concurrency; the huggingface backend runs serve.max_concurrent at once)."""
    estimates = []
    for s in servers:
        recipe = s.recipes[0].recipe
        config_path = s.model / "config.json"
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            if not isinstance(config, dict):
                raise ConfigError("is not a JSON object")
            max_len = int(serve_arg(recipe, "vllm_maxlen"))
            sequences = pipeline.inference.concurrency
            if recipe.serve.infer_backend == "huggingface":
                sequences = min(sequences, recipe.serve.max_concurrent)
            adapters = [(a / "adapter_model.safetensors").stat().st_size for a in s.adapters]
            inf = pipeline.inference  # an Answer request asks for its samples at once (n)
            samples = max(inf.votes, inf.extra_votes) if any(x.recipe.role == "answer" for x in s.recipes) else 1
            estimates.append(server_estimate(s.name, config, max_len=max_len, sequences=sequences,
                                             adapter_bytes=adapters, samples=samples, gpu_util=_gpu_util(s)))
        except (OSError, ValueError) as e:  # ConfigError is a ValueError, as is bad JSON
            raise UserError(f"{config_path}: {e} (the memory estimate reads the model's shape from it)") from None
    return estimates
