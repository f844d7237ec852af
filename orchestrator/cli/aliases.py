"""The flags that are aliases of a `--set`: per command, the flag (or argument) and the recipe key
it sets. docs/commands.md shows this table (tests/cli/test_aliases.py holds the two equal).

Each command folds the aliases it was given through `given_aliases`, as `with_flags` values, so a
value's origin reads as the flag typed (`teacher.model = qwen (from --teacher-model)`). The flags
that are no recipe key (--out-dir, --limit, --dry-run, ...) are not here.
"""

from __future__ import annotations

from typing import Any, Literal

import click

# command -> flag (an argument: its metavar) -> the dotted recipe key it sets
ALIASES: dict[str, dict[str, str]] = {
    "distill": {
        "--input": "data.train",
        "--teacher-url": "teacher.base_url",
        "--teacher-model": "teacher.model",
        "--concurrency": "teacher.concurrency",
    },
    "dataset": {"--input": "data.train"},
    "infer": {
        "INPUT": "data.test",
        "--mode": "inference.mode",
        "--evaluate-url": "inference.evaluate_url",
        "--evaluate-model": "inference.evaluate_model",
        "--concurrency": "inference.concurrency",
        "--votes": "inference.votes",
    },
    "score": {"GOLD": "data.gold"},
    "serve": {"--port": "serve.port", "--host": "serve.host"},
}

# the flags that name the models to serve or ask: given once, the key; given N times, paired in order,
# the list inference.answer_models (core/serving/inference_models.answer_flags folds them)
MODEL_FLAGS: dict[str, dict[str, str]] = {
    "infer": {
        "--answer-url": "inference.answer_url",
        "--answer-model": "inference.answer_model",
        "--answer-recipe": "inference.answer_recipe",
        "--evaluate-recipe": "inference.evaluate_recipe",
    },
    "eval": {"--answer-recipe": "inference.answer_recipe", "--evaluate-recipe": "inference.evaluate_recipe"},
}


def flag_of(param: click.Parameter) -> str:
    """How the table names a parameter: an option by its long flag, an argument by its metavar."""
    if isinstance(param, click.Option):
        return next((o for o in param.opts if o.startswith("--")), param.opts[0])
    return (param.metavar or (param.name or "").upper()).strip("[]").rstrip(".")


def as_value(key: str, value: Any) -> Any:
    """A flag's value as the recipe holds it: a data.* file named on the command line is relative
    to the project (as `--set data.train=...` is), or absolute when typed from elsewhere."""
    if key.startswith("data.") and value is not None:
        from orchestrator.cli.options import given_path

        return given_path(value)
    return value


def fold(command: str, given: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """The alias flags of `command` (flag -> value; None: not given) as `with_flags` values:
    dotted key -> (flag, value)."""
    table = ALIASES.get(command, {})
    unknown = set(given) - set(table)
    if unknown:
        raise KeyError(f"{command}: {sorted(unknown)} are no aliases of a --set")
    return {table[flag]: (flag, as_value(table[flag], value)) for flag, value in given.items() if value is not None}


def given_aliases(kind: Literal["role", "pipeline", "both"] = "both") -> dict[str, tuple[str, Any]]:
    """The alias flags given to the running command, folded (`fold`); `kind`: only the keys of the
    role or of the pipeline recipe."""
    from orchestrator.core.recipes.schema import PipelineRecipe, RoleRecipe

    ctx = click.get_current_context()
    command = ctx.command.name or ""
    table = ALIASES.get(command, {})
    given = {flag_of(p): ctx.params.get(p.name or "") for p in ctx.command.params if flag_of(p) in table}
    fields = {"role": RoleRecipe.model_fields, "pipeline": PipelineRecipe.model_fields}
    return {key: pair for key, pair in fold(command, given).items()
            if kind == "both" or key.split(".")[0] in fields[kind]}
