"""The commands that bring LLaMA-Factory's world in and out: `recipe import` (an LLaMA-Factory
train YAML, a LlamaBoard save or a page training becomes a recipe) and `chat` (a role's trained
model in the terminal)."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.options import ROLE, echo_err, recipe_option, role_recipe, set_option


@click.group()
def recipe() -> None:
    """Recipes from LLaMA-Factory's files."""


@recipe.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--role", type=ROLE, required=True, help="The role the recipe is for.")
@click.option("--recipe", "base", type=click.Path(dir_okay=False),
              help="The recipe it extends (default: recipes/<role>.yaml).")
@click.option("--out", type=click.Path(dir_okay=False),
              help="The recipe to write (default: recipes/<file's name>-<role>.yaml); its name is the run folder's.")
@click.option("--force", is_flag=True, help="Replace --out when it exists.")
def import_(file: str, role: str, base: str | None, out: str | None, force: bool) -> None:
    """Turn an LLaMA-Factory train YAML, LlamaBoard's saved arguments or a page training's
    training_args.yaml into a recipe extending --recipe with only what differs; a finished page
    training's adapter is adopted (training with the recipe then trains nothing).

    \b
    orchestrator recipe import examples/train_lora/qwen3_lora_sft.yaml --role answer
    orchestrator recipe import runs/tiny-answer/llamaboard/llamaboard_config/2025-01-01-12-00-00.yaml \\
        --role answer --recipe recipes/tiny-answer.yaml --out recipes/page-answer.yaml
    """
    from orchestrator.stages.recipe_import import KINDS, import_recipe

    result = import_recipe(Path(file), role, base, out, force)
    for line in result.lines:
        echo_err(line)
    click.echo(f"wrote {result.out} from {KINDS[result.kind]}; runs/{result.name}/ is its run folder")
    if result.adopted:
        click.echo(f"adopted the page training's adapter as {result.adopted}")


@click.command()
@click.argument("role", type=ROLE)
@recipe_option
@set_option
@click.option("--max-tokens", type=click.IntRange(1), default=512, show_default=True, help="Longest reply.")
def chat(role: str, recipe: str | None, overrides: tuple[str, ...], max_tokens: int) -> None:
    """Chat with the role's trained model in the terminal, served as infer serves it.

    A competition line ({"problem": ..., "questions": [...]}) is asked in the training prompt;
    any other line as it is. /quit or Ctrl-D ends.

    \b
    orchestrator chat answer --recipe recipes/tiny-answer.yaml
    head -1 datasets/sample/test.jsonl | orchestrator chat answer
    """
    import sys

    from orchestrator.stages.chat import chat as run_chat

    def lines():
        while True:
            if sys.stdin.isatty():
                click.echo("> ", nl=False)
            line = sys.stdin.readline()
            if not line:
                return
            yield line

    run_chat(role_recipe(role, recipe, overrides), lines(), click.echo, max_tokens=max_tokens)


COMMANDS = [recipe, chat]
