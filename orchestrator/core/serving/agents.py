"""The models the inference loop and the Evaluate-set builder talk to: an endpoint we were
given, or a role recipe whose model (merged, or base + adapter) we serve on a free loopback port
for a block; and which of them is the pipeline's Answer model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from orchestrator.core.common.api_keys import resolve_api_key
from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import project_root
from orchestrator.core.common.process import free_port
from orchestrator.core.llamafactory.quantization import served_weights
from orchestrator.core.recipes.loading import Loaded, load_role
from orchestrator.core.recipes.schema import InferenceSection, RoleRecipe
from orchestrator.core.serving.endpoints import listed_model
from orchestrator.core.serving.servers import model_version, served


@dataclass
class Agent:
    """One model: an endpoint we were given, or a role recipe whose model we serve."""

    role: str
    model: str  # the name sent in requests
    identity: str  # the model in cache keys (a served model's includes its merge or its adapter)
    api_key: str = field(repr=False)
    url: str | None = None
    loaded: Loaded[RoleRecipe] | None = None
    label: str = ""  # the name in the trace; unique among the Answer models
    lora: bool = False  # its adapter is served by one vLLM server with its siblings'

    @property
    def cache_identity(self) -> str:
        """The model in cache keys: a served model by its content alone (what follows the run
        folder's name in `identity`), so the same training under another run folder's name (a
        --set variant, a kept one checked out) is not asked again; an endpoint's by its name."""
        version = self.identity.rsplit("@", 1)[1] if self.loaded is not None and "@" in self.identity else "missing"
        return self.identity if version == "missing" else version  # (no merged model yet: not known by content)

    def describe(self) -> str:
        if self.url or self.loaded is None:
            return f"{self.url} ({self.model})"

        name = self.loaded.recipe.run_name
        if self.lora:
            return f"adapter runs/{name}/adapter (vLLM)"
        return f"serve runs/{name}/{'adapter on its base' if served_weights(self.loaded.recipe) == 'adapter' else 'merged'}"


def endpoint_agent(role: str, url: str, model: str | None, api_key_env: str | None) -> Agent:
    # no variable named: a keyless server (vLLM, llamafactory-cli api) on any host
    api_key = resolve_api_key(api_key_env, url) if api_key_env else "EMPTY"
    model = model or listed_model(url, api_key, role)
    return Agent(role, model, model, api_key, url=url, label=model)


def served_agent(role: str, loaded: Loaded[RoleRecipe] | None, model: str | None) -> Agent:
    if loaded is None:
        raise UserError(f"no {role} endpoint (--{role}-url) and no {role} recipe to serve (--{role}-recipe)")
    name = loaded.recipe.run_name
    version = model_version(loaded.recipe)
    return Agent(role, model or name, f"{name}@{version}", "EMPTY", loaded=loaded, label=model or name)


def make_agent(
    role: str, *, url: str | None, model: str | None, api_key_env: str | None, loaded: Loaded[RoleRecipe] | None
) -> Agent:
    """The endpoint at `url`, else the model of the role recipe `loaded`, to be served."""
    if url:
        return endpoint_agent(role, url, model, api_key_env)
    return served_agent(role, loaded, model)


@contextmanager
def agent_url(agent: Agent, startup_timeout: float | None = None) -> Iterator[str]:
    """The agent's URL, serving its model on a free loopback port for the block if needed
    (waiting at most `startup_timeout` seconds for it, when given, else serve.startup_timeout)."""
    if agent.url:
        yield agent.url
        return

    assert agent.loaded is not None  # an agent without a URL has a recipe (see make_agent)
    with served(agent.loaded, free_port(), startup_timeout=startup_timeout) as serving:
        yield serving.url


def answer_agent(inference: InferenceSection, answer_url: str | None,
                 answer_model: str | None) -> tuple[Agent, Loaded[RoleRecipe]]:
    """The pipeline's (first) Answer model, unless the command names an endpoint; and its
    recipe, whose fewshot setting its prompts follow (an endpoint's too, as in infer)."""
    first = inference.answer_models[0]
    url = answer_url or first.url
    loaded = load_role("answer", project_root() / (first.recipe or inference.answer_recipe))
    agent = make_agent("answer", url=url, model=answer_model or first.model, api_key_env=inference.api_key_env,
                       loaded=None if url else loaded)
    return agent, loaded
