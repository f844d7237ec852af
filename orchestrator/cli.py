"""`orchestrator`: one command per stage, each a thin shell over a plain function.

Heavy imports happen inside the commands, so `orchestrator --help` is instant.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator.errors import UserError

ROLE = click.Choice(["answer", "evaluate"])
recipe_option = click.option(
    "--recipe", type=click.Path(dir_okay=False), help="Recipe file (default: recipes/<role>.yaml)."
)
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key, e.g. train.learning_rate=5e-5."
)
pipeline_option = click.option(
    "--recipe", "pipeline", type=click.Path(dir_okay=False), help="Pipeline recipe (default: recipes/pipeline.yaml)."
)


def echo_err(line: str) -> None:
    click.echo(line, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show the traceback of errors.")
@click.version_option(package_name="orchestrator")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """LLaMA-Factory recipes for the Answer + Evaluate reasoning pipeline."""
    ctx.obj = {"debug": debug}


# ---------------------------------------------------------------- configs


@cli.command()
@click.argument("roles", nargs=-1, type=ROLE)
@recipe_option
@set_option
def render(roles: tuple[str, ...], recipe: str | None, overrides: tuple[str, ...]) -> None:
    """Write runs/<role>/train.yaml, merge.yaml and datasets/dataset_info.json.

    \b
    orchestrator render                      # both roles
    orchestrator render answer --set train.lora_rank=16
    """
    from orchestrator.configs import render_roles

    for r in render_roles(roles, recipe, overrides):
        click.echo(r.paths.train_yaml)
        click.echo(r.paths.merge_yaml)
    click.echo(r.dataset_info)


@cli.command()
@click.argument("roles", nargs=-1, type=ROLE)
@recipe_option
@set_option
def check(roles: tuple[str, ...], recipe: str | None, overrides: tuple[str, ...]) -> None:
    """Render and validate every config with LLaMA-Factory's own parser (no GPU, no model).

    \b
    orchestrator check
    orchestrator check answer --recipe recipes/tiny-answer.yaml
    """
    from orchestrator.configs import check_roles

    for r in check_roles(roles, recipe, overrides):
        click.echo(f"ok  {r.loaded.recipe.role}: {r.paths.train_yaml} and {r.paths.merge_yaml} accepted by LLaMA-Factory")


# ---------------------------------------------------------------- data


@cli.group()
def data() -> None:
    """Competition data files."""


@data.command("check")
@click.argument("file", type=click.Path())
@click.option("--skip-invalid", is_flag=True, help="List bad lines but accept the good ones.")
def data_check(file: str, skip_invalid: bool) -> None:
    """Validate a competition .jsonl and print a summary line.

    \b
    orchestrator data check datasets/sample/train.jsonl
    """
    from orchestrator.data import read_dataset

    dataset = read_dataset(file, skip_invalid=skip_invalid)
    for line in dataset.errors:
        echo_err(f"skipped {line}")
    click.echo(dataset.summary() + (f", {len(dataset.errors)} bad lines skipped" if dataset.errors else ""))


@cli.command()
@click.option("--out", default="datasets/sample", show_default=True, type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True)
def sample(out: str, seed: int) -> None:
    """Regenerate the shipped synthetic sample (train, test, gold, worked solutions)."""
    from orchestrator.sample import generate_sample

    summary = generate_sample(Path(out), seed=seed)
    click.echo(f"{out}: {summary}")


@cli.command("tiny-model")
@click.argument("directory", type=click.Path(file_okay=False))
def tiny_model(directory: str) -> None:
    """Build the tiny Qwen2-architecture model the CPU recipes, demo and tests use.

    \b
    orchestrator tiny-model models/tiny-qwen2
    """
    from orchestrator.tiny_model import build_tiny_model

    click.echo(build_tiny_model(Path(directory)))


def main() -> None:
    debug = "--debug" in sys.argv[1:]
    try:
        cli.main(standalone_mode=False)
    except UserError as e:
        if debug:
            raise
        for line in e.lines:
            echo_err(f"Error: {line}")
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        echo_err("Interrupted.")
        sys.exit(130)
    except KeyboardInterrupt:
        echo_err("Interrupted.")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
