"""The commands for render and check a role's configs, and what make and serving ask of the recipes."""

from __future__ import annotations


import click

from orchestrator.cli.options import ROLE, recipe_option, set_option, both_set_option, pipeline_file_option, echo_err, role_recipes, role_recipe


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
@both_set_option("data.train=data/train.jsonl")
@pipeline_file_option
def check(roles: tuple[str, ...], recipe: str | None, overrides: tuple[str, ...], pipeline: str | None) -> None:
    """Render and validate every config with LLaMA-Factory's own parser (no GPU, no model); the
    longest few-shot prompt of the pipeline recipe's data.train is checked against train.cutoff_len.

    \b
    orchestrator check
    orchestrator check answer --recipe recipes/tiny-answer.yaml
    """
    from orchestrator.core.recipes.loading import load_pipeline
    from orchestrator.core.recipes.overrides import route_overrides
    from orchestrator.stages.check import check as run_check

    _, pipeline_sets = route_overrides(overrides)
    result = run_check(role_recipes(roles, recipe, overrides, pipeline=True), load_pipeline(pipeline, pipeline_sets).recipe)
    for line in result.lines:
        click.echo(line)
    for line in result.warnings:
        echo_err(f"Warning: {line}")


@click.command()
@click.argument("role", type=ROLE)
@recipe_option
@set_option
def weights(role: str, recipe: str | None, overrides: tuple[str, ...]) -> None:
    """Print what serving the role loads: `merged` or `adapter` (the base + the adapter).

    serve.weights decides; auto is `adapter` when the base's config.json declares a
    quantization (LLaMA-Factory cannot merge into it): where `make answer-model` ends (the planner asks the same).

    \b
    orchestrator weights answer --recipe recipes/answer-32b-gptq.yaml
    """
    from orchestrator.stages.weights import weights as run_weights

    click.echo(run_weights(role_recipe(role, recipe, overrides)))


COMMANDS = [render, check, weights]
