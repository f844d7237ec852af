"""Which server asks which agent: the Answer agents, labelled; the adapters one vLLM server
holds (the Answer adapters of one base, or every model of the run); and the units, each a
server to start or an endpoint to reach, with the one place that starts them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from orchestrator.core.common.errors import UserError
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import AnswerModel, RoleRecipe
from orchestrator.core.serving.agents import Agent, agent_url, make_agent
from orchestrator.core.common.process import free_port
from orchestrator.core.serving.servers import adapter_version, check_adapters, lora_group_key, one_server, served_adapters


@dataclass
class Unit:
    """Agents reached through one server: an endpoint, a served model, or one vLLM server
    holding several adapters of one base."""

    agents: list[Agent]

    @contextmanager
    def url(self, startup_timeout: float | None = None) -> Iterator[str]:
        """The URL to ask its agents at, their server started for the block if they need one
        (waited for `startup_timeout` seconds at most, when given)."""
        first = self.agents[0]
        if not first.lora:
            with agent_url(first, startup_timeout) as url:
                yield url
            return

        with served_adapters([a.loaded for a in self.agents if a.loaded], free_port(),
                             startup_timeout=startup_timeout) as serving:
            yield serving.url


def _adapter_groups(answers: list[Agent]) -> list[list[Agent]]:
    """The served Answer models that one vLLM server can hold together: two or more of one base."""

    groups: dict[tuple[str, str], list[Agent]] = {}
    for a in answers:
        key = lora_group_key(a.loaded.recipe) if a.loaded else None
        if key:
            groups.setdefault(key, []).append(a)
    return [group for group in groups.values() if len(group) > 1]


def make_answer_agents(
    listed: list[AnswerModel], recipes: list[Loaded[RoleRecipe] | None], api_key_env: str | None
) -> list[Agent]:
    """The Answer models in the order listed (`recipes[i]`: the loaded recipe of `listed[i]`,
    None for an endpoint), each with a label unique among them; adapters of one base that vLLM
    would serve together are checked here (trained, one base), before anything else is asked."""
    from urllib.parse import urlsplit


    agents = [make_agent("answer", url=m.url, model=m.model, api_key_env=api_key_env, loaded=loaded)
              for m, loaded in zip(listed, recipes, strict=True)]
    labels = Counter(a.label for a in agents)
    for a in agents:
        if labels[a.label] > 1 and a.url:  # the same model name at two endpoints
            a.label = f"{a.model}@{urlsplit(a.url).netloc}"
    seen: dict[str, Agent] = {}
    for a in agents:
        if a.label in seen:
            raise UserError(f"inference.answer_models: {a.describe()} is listed twice; "
                            "list each model once (inference.votes asks each for several samples)")
        seen[a.label] = a
    for group in _adapter_groups(agents):
        check_adapters([a.loaded for a in group if a.loaded])
    return agents


def share_servers(answers: list[Agent], evaluate: Agent) -> bool:
    """Mark the agents whose adapters a vLLM server holds together: the Answer adapters of one
    base (their cache identity then names the adapter), or, when every model is an adapter of
    one base (see serving.one_server), all of them: True, the whole run is pipelined on it."""

    groups = _adapter_groups(answers)
    everyone = [*answers, evaluate]
    loadeds = [a.loaded for a in everyone if a.loaded and not a.url]
    shared = len(loadeds) == len(everyone) and one_server([x.recipe for x in loadeds])
    if shared:
        check_adapters(loadeds)
    for a in everyone if shared else [a for group in groups for a in group]:
        assert a.loaded is not None
        a.lora = True
        a.model = a.loaded.recipe.run_name  # the adapter's name in the vLLM server
    for a in (a for group in groups for a in group):
        assert a.loaded is not None
        a.identity = f"{a.loaded.recipe.run_name}@lora-{adapter_version(a.loaded.recipe)}"
    return shared


def serving_units(agents: list[Agent]) -> list[Unit]:
    """One unit per server to start or endpoint to reach, in the order the models are listed;
    the adapters sharing a vLLM server form one unit, where the first of them is listed."""

    units: list[Unit] = []
    shared: dict[tuple[str, str] | None, Unit] = {}
    for a in agents:
        if a.lora and a.loaded:
            key = lora_group_key(a.loaded.recipe)
            if key in shared:
                shared[key].agents.append(a)
                continue
            shared[key] = Unit([a])
            units.append(shared[key])
        else:
            units.append(Unit([a]))
    return units
