"""LlamaBoard opened with a recipe's values: `python -m orchestrator.core.llamafactory.llamaboard runs/<name>/llamaboard.yaml`.

Run by `orchestrator webui` with its working directory runs/<name>/llamaboard/, where LlamaBoard
reads llamaboard_cache/user_config.yaml (written by the parent) and keeps saves/; host and port
come from LLAMABOARD_HOST and LLAMABOARD_PORT, a login from LLAMABOARD_USER and LLAMABOARD_PASSWORD.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

# The login LlamaBoard asks for when both are set (required by `orchestrator webui` beyond loopback).
AUTH_ENV = ("LLAMABOARD_USER", "LLAMABOARD_PASSWORD")


def gradio_host(host: str) -> str:
    """gradio's server_name for `host`: gradio builds its URL from it and strips brackets before
    binding, so an IPv6 address goes in brackets (LLaMA-Factory's own `[::]`)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def main(argv: list[str]) -> None:
    values = yaml.safe_load(Path(argv[0]).read_text(encoding="utf-8"))
    # gradio binds an IPv4 socket to GRADIO_SERVER_NAME (read at import) to test the port: an
    # IPv6 host there makes every port "taken". The host is passed as server_name instead.
    os.environ.pop("GRADIO_SERVER_NAME", None)

    from llamafactory.extras.constants import DEFAULT_TEMPLATE
    from llamafactory.extras.misc import fix_proxy
    from llamafactory.webui import interface
    from llamafactory.webui.components import train as train_tab
    from llamafactory.webui.engine import Engine

    # Our values on load fire two LlamaBoard handlers whose answers may arrive after them:
    # model name -> model path (user_config's path_dict) and template (DEFAULT_TEMPLATE), and
    # stage -> an emptied dataset list. Make both answer with the recipe's values, so every
    # order of events ends with the recipe on the page.
    DEFAULT_TEMPLATE[values["top.model_name"]] = values["top.template"]
    change_stage = train_tab.change_stage

    def recipe_stage(stage: str):
        datasets, packing = change_stage(stage)
        return (values["train.dataset"] if stage == values["train.training_stage"] else datasets), packing

    train_tab.change_stage = recipe_stage  # create_train_tab() looks the handler up by this name

    class RecipeEngine(Engine):
        def resume(self):
            base = super().resume()
            yield next(base)  # language, hub, model name, fresh config path
            if not self.runner.running:  # else the running training's values follow
                yield self._update_component({elem: {"value": value} for elem, value in values.items()})
            yield from base

    interface.Engine = RecipeEngine  # create_ui() builds its engine from this name
    fix_proxy()  # gradio checks its own loopback URL: never through a proxy
    user, password = (os.environ.get(name, "").strip() for name in AUTH_ENV)
    interface.create_ui().queue().launch(
        auth=(user, password) if user and password else None,
        server_name=gradio_host(os.environ["LLAMABOARD_HOST"]),
        server_port=int(os.environ["LLAMABOARD_PORT"]),
        share=False,
        inbrowser=False,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
