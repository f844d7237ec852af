"""The commands for the models: the tiny one, the base's download, LoRA training, merging, serving, LlamaBoard."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.aliases import given_aliases
from orchestrator.cli.options import ROLE, recipe_option, set_option, both_set_option, echo_err, role_recipe


@click.command("tiny-model")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--quantize", type=click.Choice(["gptq"]),
              help="Quantize it for real: 4-bit GPTQ calibrated on the sample (needs `make setup-quant`).")
def tiny_model(directory: str, quantize: str | None) -> None:
    """Build the tiny Qwen2-architecture model the CPU recipes, demo and tests use.

    \b
    orchestrator tiny-model models/tiny-qwen2
    orchestrator tiny-model models/tiny-qwen2-gptq --quantize gptq
    """
    from orchestrator.stages.tiny_model import build_quantized_tiny_model, build_tiny_model

    click.echo(build_quantized_tiny_model(Path(directory), quantize) if quantize else build_tiny_model(Path(directory)))


@click.command()
@click.argument("role", type=ROLE)
@recipe_option
@set_option
def download(role: str, recipe: str | None, overrides: tuple[str, ...]) -> None:
    """Fetch the role's base model from modelscope (skipped when a complete copy exists).

    \b
    orchestrator download answer
    """
    from orchestrator.stages.download import download as run_download

    click.echo(run_download(role_recipe(role, recipe, overrides)))


@click.command()
@click.argument("role", type=ROLE)
@recipe_option
@set_option
@click.option("--fresh", is_flag=True, help="Start over instead of resuming from the last checkpoint.")
def train(role: str, recipe: str | None, overrides: tuple[str, ...], fresh: bool) -> None:
    """Train the role's LoRA adapter with llamafactory-cli (resumes from checkpoints).

    \b
    orchestrator train answer
    orchestrator train evaluate --recipe recipes/tiny-evaluate.yaml
    orchestrator train answer --set train.learning_rate=5e-5 --fresh
    """
    from orchestrator.core.llamafactory.launch import describe
    from orchestrator.stages.train import train as run_train

    loaded = role_recipe(role, recipe, overrides)
    result = run_train(loaded, fresh=fresh)
    if result.up_to_date:
        click.echo(f"up to date: {result.paths.adapter} (--fresh trains again)")
        return
    ran = f"; {describe(result.distributed)}" if result.distributed else ""
    if not result.saved_here:
        ds = loaded.recipe.distributed
        click.echo(f"trained this node's share in {result.seconds:.0f} s{ran}")
        click.echo(f"rank 0 (node 0, {ds.master_addr}) saved the model in its runs/{loaded.recipe.run_name}/adapter; "
                   "this node holds no adapter and no manifest")
        return
    loss = f", last logged loss {result.final_loss:.4f}" if result.final_loss is not None else ""
    click.echo(f"trained {result.paths.adapter} in {result.seconds:.0f} s{loss}{ran}")
    if result.rewards:  # LLaMA-Factory's DPO metrics: at step 1 the policy is the reference (the SFT model)
        for when, logged in result.rewards.items():
            click.echo(f"{when} logged step {logged.get('step')}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in logged.items() if k.startswith("rewards/")))
    click.echo(f"manifest: {result.paths.manifest}")


@click.command()
@click.argument("role", type=ROLE)
@recipe_option
@both_set_option("merge.export_device=cpu")
@click.option("--pipeline", type=click.Path(dir_okay=False),
              help="Pipeline recipe whose data.train calibrates a quantized export (default: recipes/pipeline.yaml).")
def merge(role: str, recipe: str | None, overrides: tuple[str, ...], pipeline: str | None) -> None:
    """Merge the trained adapter into the base model (runs/<name>/merged/); skipped when the
    role serves its adapter (serve.weights adapter, or auto on a quantized base).

    \b
    orchestrator merge answer
    orchestrator merge answer --recipe recipes/answer-32b-gptq.yaml --pipeline recipes/my-pipeline.yaml
    """
    from orchestrator.core.recipes.loading import load_pipeline, load_role
    from orchestrator.core.recipes.overrides import route_overrides
    from orchestrator.stages.merge import merge as run_merge, needs_calibration

    role_sets, pipeline_sets = route_overrides(overrides)
    loaded = load_role(role, recipe, role_sets)
    calibration = None
    if needs_calibration(loaded):  # a quantized export calibrates on the pipeline recipe's training questions
        pipe = load_pipeline(pipeline, pipeline_sets)
        calibration = pipe.data_file("data.train")
        echo_err(f"[merge] calibration: {pipe.data_line('data.train')}")
    click.echo(run_merge(loaded, calibration_data=calibration))


@click.command()
@click.argument("role", type=ROLE)
@recipe_option
@set_option
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: serve.port; 0: any free port).")
@click.option("--host", help="Interface to listen on (default: serve.host, 127.0.0.1).")
@click.option("--api-key-env", metavar="NAME", help="Require the key held in this environment variable.")
def serve(role, recipe, overrides, port, host, api_key_env) -> None:
    """Serve the role's model (merged, or base + adapter) over the OpenAI API until Ctrl-C.

    \b
    orchestrator serve answer
    orchestrator serve evaluate --recipe recipes/tiny-evaluate.yaml --port 8012
    SERVE_KEY=... orchestrator serve answer --host 0.0.0.0 --api-key-env SERVE_KEY
    """
    from orchestrator.core.recipes.loading import with_flags
    from orchestrator.stages.serve import serve as run_serve

    # --port and --host are serve.port and serve.host (cli/aliases.py), folded into the recipe
    run_serve(with_flags(role_recipe(role, recipe, overrides), given_aliases()), api_key_env=api_key_env)


@click.command()
@click.argument("role", type=ROLE, default="answer")
@recipe_option
@set_option
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
def webui(role, recipe, overrides, port, host) -> None:
    """LlamaBoard (LLaMA-Factory's web UI) prefilled from the role's recipe, until Ctrl-C.

    \b
    orchestrator webui                       # the Answer recipe at http://127.0.0.1:7860/
    orchestrator webui evaluate --port 7861 --set train.learning_rate=5e-5
    """
    from orchestrator.stages.webui import launch_webui

    launch_webui(role_recipe(role, recipe, overrides), port=port, host=host)


COMMANDS = [tiny_model, download, train, merge, serve, webui]
