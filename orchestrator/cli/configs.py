"""The commands for render and check a role's configs, and what make and serving ask of the recipes."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.options import ROLE, recipe_option, set_option, echo_err, role_recipes, role_recipe


@click.command()
@click.argument("roles", nargs=-1, type=ROLE)
@recipe_option
@set_option
def render(roles: tuple[str, ...], recipe: str | None, overrides: tuple[str, ...]) -> None:
    """Write runs/<name>/train.yaml, merge.yaml and datasets/dataset_info.json (<name>: the recipe's name).

    \b
    orchestrator render                      # both roles
    orchestrator render answer --set train.lora_rank=16
    """
    from orchestrator.stages.check import render as run_render

    for line in run_render(role_recipes(roles, recipe, overrides)):
        click.echo(line)


@click.command()
@click.argument("roles", nargs=-1, type=ROLE)
@recipe_option
@set_option
def check(roles: tuple[str, ...], recipe: str | None, overrides: tuple[str, ...]) -> None:
    """Render and validate every config with LLaMA-Factory's own parser (no GPU, no model).

    \b
    orchestrator check
    orchestrator check answer --recipe recipes/tiny-answer.yaml
    """
    from orchestrator.core.recipes.loading import load_pipeline
    from orchestrator.stages.check import check as run_check

    result = run_check(role_recipes(roles, recipe, overrides), load_pipeline().recipe)
    for line in result.lines:
        click.echo(line)
    for line in result.warnings:
        echo_err(f"Warning: {line}")


@click.command("make-vars", hidden=True)
@click.argument("given", nargs=-1, metavar="NAME=VALUE...")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The makefile fragment to write.")
@click.option("--ignore-kept", is_flag=True, help="Neither read nor write the kept values (make demo).")
@click.option("--models", is_flag=True, help="The make call builds or serves models: a role recipe must load.")
@click.option("--eval-check", is_flag=True, help="The make call runs eval: stop where eval would refuse.")
def make_vars(given, out, ignore_kept, models, eval_check) -> None:
    """For the Makefile, once per make call: the variables given to it over those kept from the
    last one, the data files they name, each role's recipe, the recipe files it extends, its run
    folder, training set and served weights, as a fragment to include (OUT), every command
    argument quoted for the shell; the kept values are said, and the Error lines where make stops."""
    from orchestrator.stages.make_vars import make_vars as run_make_vars

    pairs = dict(item.partition("=")[::2] for item in given)
    result = run_make_vars(pairs, Path(out), ignore_kept, models=models, eval_check=eval_check)
    for line in result.notes():
        echo_err(line)
    for line in result.errors:
        echo_err(f"Error: {line}")


@click.command()
@click.argument("role", type=ROLE)
@recipe_option
@set_option
def weights(role: str, recipe: str | None, overrides: tuple[str, ...]) -> None:
    """Print what serving the role loads: `merged` or `adapter` (the base + the adapter).

    serve.weights decides; auto is `adapter` when the base's config.json declares a
    quantization (LLaMA-Factory cannot merge into it): where `make answer-model` ends (make-vars asks the same).

    \b
    orchestrator weights answer --recipe recipes/answer-32b-gptq.yaml
    """
    from orchestrator.stages.weights import weights as run_weights

    click.echo(run_weights(role_recipe(role, recipe, overrides)))


COMMANDS = [render, check, make_vars, weights]
