"""Stage: render the recipes into LLaMA-Factory configs and check them with its parser."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.llamafactory import RolePaths, check_role, render_dataset_info, render_role
from orchestrator.recipes import ROLES, Loaded, load_role


@dataclass
class Rendered:
    loaded: Loaded
    paths: RolePaths
    dataset_info: Path


def render_roles(
    roles: list[str] | tuple[str, ...] = (), recipe: str | None = None, overrides: tuple[str, ...] = ()
) -> list[Rendered]:
    """Render train.yaml and merge.yaml of each role (all roles when none is given) and
    register their datasets in datasets/dataset_info.json."""
    roles = list(roles) or list(ROLES)
    if recipe and len(roles) > 1:
        raise UserError("--recipe names one role's recipe: give the role too, e.g. `render answer --recipe FILE`")
    loaded = [load_role(role, recipe, overrides) for role in roles]
    info = render_dataset_info([l.recipe for l in loaded])
    return [Rendered(l, render_role(l), info) for l in loaded]


def check_roles(
    roles: list[str] | tuple[str, ...] = (), recipe: str | None = None, overrides: tuple[str, ...] = ()
) -> list[Rendered]:
    """Render, then let LLaMA-Factory's own parser check every file; all problems at once."""
    rendered = render_roles(roles, recipe, overrides)
    problems = [p for r in rendered for p in check_role(r.loaded, r.paths)]
    if problems:
        raise UserError(*problems)
    return rendered
