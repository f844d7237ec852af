"""Stage: serve a role's model (merged, or base + adapter) over the OpenAI API with
`llamafactory-cli api`, until Ctrl-C.

The work is in orchestrator.core.serving.servers, which `infer` uses too.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from orchestrator.core.common.process import free_port
from orchestrator.core.common.progress import say
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.serving.servers import Serving, served


def serve(
    loaded: Loaded[RoleRecipe],
    *,
    port: int | None = None,
    host: str | None = None,
    block: bool = True,
    api_key_env: str | None = None,
) -> AbstractContextManager[Serving] | None:
    """Serve a role's model. Port and host default to the recipe's `serve:` section
    (port 0: any free port). block: run until Ctrl-C or the server dies; else return the
    `served(...)` context manager for the caller to enter."""
    host = host or loaded.recipe.serve.host
    port = loaded.recipe.serve.port if port is None else port
    context = served(loaded, port or free_port(host), host, api_key_env)
    if not block:
        return context
    with context as serving:
        say(f"serve {loaded.recipe.run_name}", "Ctrl-C stops it")
        serving.wait()
    return None
