"""Which models share a server: the one decision `infer` (which starts the servers) and `package`
(which ships what they serve) both follow, so an image serves its models as infer would here.

A run's models are its Answer models in the order listed, then its Evaluate model; None stands
for an endpoint we were given (no server of ours). When every model is an adapter of one base on
vLLM (serve.weights adapter, serve.infer_backend vllm, one model.path and chat template), one vLLM
server holds them all and the run is pipelined on it. Otherwise Answer adapters of one base on vLLM,
two or more, share one server, and every other model has its own (its merged model, or its base
with its adapter, as serve.weights says).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import display
from orchestrator.core.llamafactory.chat_template import template_args
from orchestrator.core.llamafactory.quantization import served_weights
from orchestrator.core.recipes.loading import Loaded, command_for
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.role_paths import model_path, role_paths


def lora_group_key(recipe: RoleRecipe) -> tuple[str, str] | None:
    """What adapters must share to be served by one vLLM server (None: not served by vLLM): the
    base, and the chat template they were trained with (model.template, train.default_system...)."""
    if recipe.serve.infer_backend != "vllm":
        return None
    return str(model_path(recipe)), json.dumps(template_args(recipe), sort_keys=True)


def one_server(recipes: list[RoleRecipe]) -> bool:
    """Whether one vLLM server can serve all these role recipes (every model of an infer run):
    each serves its adapter (serve.weights) on the same base with serve.infer_backend vllm."""
    keys = {lora_group_key(recipe) for recipe in recipes}
    return len(keys) == 1 and None not in keys and all(served_weights(r) == "adapter" for r in recipes)


def check_adapters(loadeds: list[Loaded[RoleRecipe]]) -> None:
    """Refuse adapters that are not trained yet, or that do not share one base model."""
    problems = []
    keys = {lora_group_key(loaded.recipe) for loaded in loadeds}
    if len(keys) != 1 or None in keys:
        problems.append("adapters served by one vLLM server need serve.infer_backend vllm and the same "
                        "model.path (or model.source), model.template and train.default_system: "
                        + ", ".join(display(x.path) for x in loadeds))
    for loaded in loadeds:
        paths = role_paths(loaded.recipe)
        if not (paths.adapter / "adapter_config.json").exists():
            problems.append(f"{paths.adapter} has no trained adapter: run `{command_for(loaded, 'train')}` first")
    if problems:
        raise UserError(*problems)


@dataclass(frozen=True)
class SharedServer:
    """The models one server holds, by their places in [*answers, evaluate]."""

    members: tuple[int, ...]
    lora: bool  # one vLLM server with every member's adapter on their base


@dataclass(frozen=True)
class ServerPlan:
    """The servers of a run: the Answer models' in the order listed (a shared one where its first
    member is listed), then the Evaluate model's; or, `everyone`, the one server of them all."""

    servers: tuple[SharedServer, ...]
    everyone: bool
    answer_groups: tuple[tuple[int, ...], ...]  # Answer adapters of one base that vLLM serves together

    def answer_servers(self) -> tuple[SharedServer, ...]:
        """The servers of the Answer models (staged or pipelined beside the Evaluate model's)."""
        return self.servers if self.everyone else self.servers[:-1]


def plan_servers(answers: Sequence[Loaded[RoleRecipe] | None], evaluate: Loaded[RoleRecipe] | None) -> ServerPlan:
    """Which server serves which model (None: an endpoint); adapters a vLLM server would hold
    together are checked here (trained, one base), before anything is started or copied."""
    every = [*answers, evaluate]
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, loaded in enumerate(answers):
        key = lora_group_key(loaded.recipe) if loaded is not None else None
        if key is not None:
            by_key.setdefault(key, []).append(i)
    groups = tuple(tuple(g) for g in by_key.values() if len(g) > 1)
    served = [x for x in every if x is not None]
    if len(served) == len(every) and one_server([x.recipe for x in served]):
        check_adapters(served)
        return ServerPlan((SharedServer(tuple(range(len(every))), lora=True),), everyone=True, answer_groups=groups)
    for group in groups:
        check_adapters([loaded for i in group if (loaded := answers[i]) is not None])
    in_group = {i: group for group in groups for i in group}
    servers = [SharedServer(in_group[i], lora=True) if i in in_group else SharedServer((i,), lora=False)
               for i in range(len(answers)) if i not in in_group or in_group[i][0] == i]
    servers.append(SharedServer((len(answers),), lora=False))
    return ServerPlan(tuple(servers), everyone=False, answer_groups=groups)
