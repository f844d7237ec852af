"""Which server asks which agent: the Answer agents, labelled; the adapters one vLLM server
holds (the Answer adapters of one base, or every model of the run: core/serving/grouping.py
decides, for package too); and the units, each a server to start or an endpoint to reach, with
the one place that starts them."""

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
from orchestrator.core.serving.grouping import ServerPlan, plan_servers
from orchestrator.core.serving.servers import adapter_version, served_adapters


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


def make_answer_agents(
    listed: list[AnswerModel], recipes: list[Loaded[RoleRecipe] | None], api_key_env: str | None
) -> list[Agent]:
    """The Answer models in the order listed (`recipes[i]`: the loaded recipe of `listed[i]`,
    None for an endpoint), each with a label unique among them."""
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
    return agents


def _served(agent: Agent) -> Loaded[RoleRecipe] | None:
    return None if agent.url else agent.loaded


def share_servers(answers: list[Agent], evaluate: Agent) -> ServerPlan:
    """Which server serves which agent (core/serving/grouping.py; adapters a vLLM server holds
    together are checked there, before anything is asked). Marks the agents whose adapters a vLLM
    server holds together; the Answer adapters of one base have a cache identity naming the adapter."""
    plan = plan_servers([_served(a) for a in answers], _served(evaluate))
    everyone = [*answers, evaluate]
    for server in plan.servers:
        for i in server.members if server.lora else ():
            a = everyone[i]
            assert a.loaded is not None
            a.lora = True
            a.model = a.loaded.recipe.run_name  # the adapter's name in the vLLM server
    for a in (answers[i] for group in plan.answer_groups for i in group):
        assert a.loaded is not None
        a.identity = f"{a.loaded.recipe.run_name}@lora-{adapter_version(a.loaded.recipe)}"
    return plan


def serving_units(answers: list[Agent], plan: ServerPlan) -> list[Unit]:
    """One unit per server to start or endpoint to reach for the Answer models, as `plan` has them."""
    return [Unit([answers[i] for i in server.members]) for server in plan.answer_servers()]
