"""Stage: LlamaBoard (LLaMA-Factory's web UI) opened with a role recipe's values, no click needed.

The page shows the arguments `orchestrator train` would use: `llamaboard_values` maps them onto
LlamaBoard's element ids, rendered into runs/<name>/llamaboard.yaml; orchestrator.core.llamafactory.llamaboard puts
them on the page when it loads. LlamaBoard keeps its files (llamaboard_cache/, saves/) relative
to its working directory, runs/<name>/llamaboard/: "Save arguments" writes llamaboard_config/<time>.yaml
there, and a training started from the page its own folder saves/<model>/<method>/train_<time>/ (the
page's habit), never runs/<name>/adapter: `orchestrator recipe import` turns either into a recipe,
adopting a finished page training's adapter.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.core.common.errors import StageFailed
from orchestrator.core.common.files import atomic_write_text
from orchestrator.core.common.paths import display
from orchestrator.core.common.process import Server, check_host, require_free_port, url_host
from orchestrator.core.common.progress import say
from orchestrator.core.common.render import render
from orchestrator.core.llamafactory.configs import flat, render_roles, train_sections
from orchestrator.core.llamafactory.launch import launch_env
from orchestrator.core.llamafactory.llamaboard import AUTH_ENV
from orchestrator.core.recipes.loading import Loaded, default_role_recipe
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.role_paths import role_paths

# LlamaBoard element -> the LLaMA-Factory argument it shows.
ELEMENTS = {
    "top.model_path": "model_name_or_path",
    "top.finetuning_type": "finetuning_type",
    "top.template": "template",
    "train.dataset_dir": "dataset_dir",
    "train.dataset": "dataset",
    "train.learning_rate": "learning_rate",
    "train.num_train_epochs": "num_train_epochs",
    "train.cutoff_len": "cutoff_len",
    "train.batch_size": "per_device_train_batch_size",
    "train.gradient_accumulation_steps": "gradient_accumulation_steps",
    "train.lr_scheduler_type": "lr_scheduler_type",
    "train.lora_rank": "lora_rank",
    "train.lora_alpha": "lora_alpha",
    "train.lora_dropout": "lora_dropout",
    "train.lora_target": "lora_target",
}
# Arguments shown by other elements (stage, compute type) or replaced by LlamaBoard's own
# DeepSpeed configs (ds_stage); every other argument of the recipe goes into extra_args.
# output_dir is left to the page (train_<time>, under saves/): a page training never resumes
# the recipe's checkpoints nor writes into its adapter.
_SHOWN = {*ELEMENTS.values(), "stage", "bf16", "fp16", "pure_bf16", "deepspeed", "output_dir"}


@dataclass
class WebUI:
    """A running LlamaBoard; stop it with `stop()` or a `with` block."""

    url: str
    server: Server
    values: dict[str, Any]  # element id -> value the page opens with
    values_path: Path

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> WebUI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _defaults() -> dict[str, Any]:
    """LLaMA-Factory's defaults for the arguments a recipe leaves out."""
    from dataclasses import MISSING, fields

    from llamafactory.hparams import parser

    return {f.name: f.default for cls in parser._TRAIN_ARGS for f in fields(cls) if f.default is not MISSING}


def llamaboard_values(recipe: RoleRecipe) -> dict[str, Any]:
    """LlamaBoard element id -> value, from the arguments `orchestrator train` renders."""
    from llamafactory.extras.constants import SUPPORTED_MODELS, TRAINING_STAGES

    ours = flat(train_sections(recipe, role_paths(recipe)))
    args = {**_defaults(), **ours}
    shown = {element: args[arg] for element, arg in ELEMENTS.items()}
    if isinstance(shown["train.lora_target"], list):
        shown["train.lora_target"] = ",".join(shown["train.lora_target"])
    ds = recipe.distributed
    return {
        # a name outside LlamaBoard's catalogue shows as Custom, with our path and template
        "top.model_name": recipe.model.name if recipe.model.name in SUPPORTED_MODELS else "Custom",
        **shown,
        "train.training_stage": {v: k for k, v in TRAINING_STAGES.items()}[args["stage"]],
        "train.dataset": args["dataset"].split(","),
        "train.learning_rate": str(args["learning_rate"]),  # LlamaBoard's text boxes
        "train.num_train_epochs": str(args["num_train_epochs"]),
        "train.lora_alpha": args["lora_alpha"] or 2 * args["lora_rank"],  # LLaMA-Factory's default
        "train.compute_type": next((t for t in ("pure_bf16", "bf16", "fp16") if args.get(t)), "fp32"),
        "train.ds_stage": str(ds.deepspeed) if ds.deepspeed else "none",
        "train.ds_offload": ds.offload,
        # LlamaBoard passes these to LLaMA-Factory over its own settings
        "train.extra_args": json.dumps({k: v for k, v in ours.items() if k not in _SHOWN}, ensure_ascii=False),
    }


def render_llamaboard(loaded: Loaded[RoleRecipe]) -> tuple[Path, dict[str, Any]]:
    """Write runs/<name>/llamaboard.yaml; return its path and values."""
    values = llamaboard_values(loaded.recipe)
    header = f"generated by `orchestrator webui {loaded.recipe.role}` from {display(loaded.path)}; edit the recipe, not this file"
    path = role_paths(loaded.recipe).run_dir / "llamaboard.yaml"
    atomic_write_text(path, render("llamafactory/llamaboard.yaml.j2", header=header, values=values))
    return path, values


def write_user_config(workdir: Path, model_name: str, model_path: str) -> Path:
    """llamaboard_cache/user_config.yaml: the model LlamaBoard opens with, and the path its
    model dropdown fills in for that name; the user's language and hub are kept."""
    path = workdir / "llamaboard_cache" / "user_config.yaml"
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        old = {}
    if not isinstance(old, dict):
        old = {}
    config = {
        "lang": old.get("lang") or "en",
        "hub_name": old.get("hub_name") or "huggingface",
        "last_model": model_name,
        "path_dict": {**(old.get("path_dict") or {}), model_name: model_path},
        "cache_dir": old.get("cache_dir"),
    }
    return atomic_write_text(path, yaml.safe_dump(config, allow_unicode=True, sort_keys=False))


def where_the_page_saves(loaded: Loaded[RoleRecipe], workdir: Path) -> list[str]:
    """Where the page's saves and trainings land, and the command that brings each back."""
    role = loaded.recipe.role
    base = "" if loaded.path.resolve() == default_role_recipe(role).resolve() else f" --recipe {display(loaded.path)}"
    return [
        f"Save arguments writes {display(workdir)}/llamaboard_config/<time>.yaml; "
        f"`orchestrator recipe import FILE --role {role}{base}` makes it a recipe",
        f"Start trains into {display(workdir)}/saves/<model>/<method>/train_<time>/ (never "
        f"{display(role_paths(loaded.recipe).adapter)}); once finished, `orchestrator recipe import "
        f"THAT_FOLDER/training_args.yaml --role {role}{base}` makes it a recipe and adopts its adapter",
    ]



def launch_webui(
    loaded: Loaded[RoleRecipe],
    *,
    port: int = 7860,
    host: str = "127.0.0.1",
    block: bool = True,
) -> WebUI:
    """Start LlamaBoard prefilled from the role's recipe. block=True: serve until Ctrl-C, then
    stop it. block=False: return it running; the caller stops it (`with launch_webui(...) as ui`)."""
    check_host(host, "LlamaBoard", guarded=all(os.environ.get(v, "").strip() for v in AUTH_ENV),
               how=f"ask for a password: export {AUTH_ENV[0]}=<a user> {AUTH_ENV[1]}=<a password>")
    require_free_port(host, port, "webui")
    # as `orchestrator render`: train.yaml beside llamaboard.yaml, and the role's dataset in
    # datasets/dataset_info.json, which the page's dataset list reads
    (rendered,) = render_roles([loaded])
    paths = rendered.paths
    values_path, values = render_llamaboard(loaded)
    workdir = paths.run_dir / "llamaboard"
    write_user_config(workdir, values["top.model_name"], values["top.model_path"])

    url = f"http://{url_host(host)}:{port}/"
    stage = f"webui {loaded.recipe.run_name}"
    env = {
        "LLAMABOARD_HOST": host,
        "LLAMABOARD_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "DISABLE_VERSION_CHECK": "1",
        **launch_env(loaded),  # a training started from the page launches like `orchestrator train`
    }
    server = Server(
        [sys.executable, "-m", "orchestrator.core.llamafactory.llamaboard", str(values_path)],
        stage=stage,
        log_path=paths.run_dir / "webui.log",
        ready_url=url,
        env=env,
        cwd=workdir,
        startup_timeout=300.0,
    )
    say(stage, f"starting LlamaBoard with {values_path} (log: {server.log_path})")
    for line in where_the_page_saves(loaded, workdir):
        say(stage, line)
    ui = WebUI(url, server.start(), values, values_path)
    if not block:
        return ui
    proc = server.proc
    assert proc is not None  # started above
    with ui:
        print(f"LlamaBoard: {url}  (Ctrl-C stops it)", flush=True)
        try:
            while proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            say(stage, "stopped")
            return ui
        raise StageFailed(
            f"{stage}: LlamaBoard exited with code {proc.returncode}; its log: {server.log_path}",
            *[f"  {line}" for line in server.tail(8)],
        )
