"""What the commands share: the options they spell the same, and the recipe loading of the
commands that read one role's recipe."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator.core.common.errors import UserError

if TYPE_CHECKING:
    from orchestrator.core.recipes.loading import Loaded
    from orchestrator.core.recipes.schema import RoleRecipe

ROLE = click.Choice(["answer", "evaluate"])
recipe_option = click.option(
    "--recipe", type=click.Path(dir_okay=False), help="Recipe file (default: recipes/<role>.yaml)."
)
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key, e.g. train.learning_rate=5e-5."
)
def both_set_option(example: str):
    """--set for a command that reads a role and the pipeline recipe; `example` one that applies to it."""
    return click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE",
        help=f"Override a key of the role or the pipeline recipe (by its first part), e.g. {example}.",
    )
pipeline_set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a pipeline recipe key, e.g. teacher.max_attempts=3 or inference.votes=3.",
)
skip_option = click.option(
    "--skip-invalid", is_flag=True, help="Process the good lines of a partly bad file; list the bad ones."
)
pipeline_file_option = click.option(
    "--pipeline", type=click.Path(dir_okay=False), help="Pipeline recipe (default: recipes/pipeline.yaml)."
)


def pipeline_option(command: Callable[..., None]) -> Callable[..., None]:
    """--pipeline FILE, for a command that used to spell it --recipe: that spelling is still
    taken for one release, with one line on stderr (--recipe is the role recipe everywhere)."""

    @functools.wraps(command)
    def taking_old_spelling(*args: Any, old_recipe: str | None = None, **kwargs: Any) -> None:
        if old_recipe is not None:
            name = click.get_current_context().info_name
            if kwargs.get("pipeline") is not None:
                raise UserError(f"--recipe and --pipeline both name the pipeline recipe of {name}: give --pipeline alone")
            echo_err(f"[{name}] --recipe names the pipeline recipe here: spell it --pipeline "
                     "(--recipe will mean the role recipe)")
            kwargs["pipeline"] = old_recipe
        command(*args, **kwargs)

    old = click.option("--recipe", "old_recipe", hidden=True, type=click.Path(dir_okay=False))
    return pipeline_file_option(old(taking_old_spelling))


def echo_err(line: str) -> None:
    click.echo(line, err=True)


def given_path(path: str | None) -> str | None:
    """A file named on the command line, as a data.* value (which is relative to the project)."""
    if path is None:
        return None
    from orchestrator.core.common.paths import project_root

    p = Path(path)
    return path if p.is_absolute() or Path.cwd().resolve() == project_root() else str(p.resolve())


def failed_requests(counted: str, failures: list[str], errors: Path, meanwhile: str = "") -> UserError:
    """The one line for requests that failed after retries: how many, the first, where they
    are listed, and that the same command asks them again (exit code 1)."""
    more = ", ..." if len(failures) > 1 else ""
    return UserError(f"{counted} ({failures[0]}{more}); they are in {errors} and are asked again when you run "
                     f"the same command" + (f"; {meanwhile}" if meanwhile else ""), exit_code=1)


def role_recipes(roles: tuple[str, ...], recipe: str | None, overrides: tuple[str, ...],
                 pipeline: bool = False) -> list[Loaded[RoleRecipe]]:
    """The role recipes of `render` and `check` (all roles when none is given); `pipeline`: the
    command reads the pipeline recipe too, so its keys are taken (and left to it)."""
    from orchestrator.core.recipes.loading import load_role
    from orchestrator.core.recipes.overrides import route_overrides
    from orchestrator.core.recipes.schema import ROLES

    roles = roles or ROLES
    if recipe and len(roles) > 1:
        raise UserError("--recipe names one role's recipe: give the role too, e.g. `render answer --recipe FILE`")
    role_sets, _ = route_overrides(overrides, pipeline=pipeline)
    return [load_role(role, recipe, role_sets) for role in roles]


def role_recipe(role: str, recipe: str | None, overrides: tuple[str, ...]) -> Loaded[RoleRecipe]:
    """The role recipe of a command that reads no pipeline recipe."""
    from orchestrator.core.recipes.loading import load_role
    from orchestrator.core.recipes.overrides import route_overrides

    role_sets, _ = route_overrides(overrides, pipeline=False)
    return load_role(role, recipe, role_sets)


def kept_limit(limit: int | None, stage: str, times: int = 1) -> int | None:
    """--limit, else LIMIT of the project state (times `times`: distill asks about 10×N), said."""
    if limit is not None:
        return limit
    from orchestrator.core.project.state import kept_limit as kept

    found = kept()
    if found is None:
        return None
    echo_err(f"[{stage}] --limit {found[0] * times} (from {found[1]}{', times 10' if times == 10 else ''})")
    return found[0] * times
