"""Render role recipes into LLaMA-Factory configs and check them with its parser: the
`render` and `check` commands, and the first step of `train`, `merge` and `webui`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.common.errors import UserError
from orchestrator.core.data.mixed_datasets import mixed_entries
from orchestrator.core.llamafactory.checks import check_role
from orchestrator.core.llamafactory.configs import render_dataset_info, render_role
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.role_paths import RolePaths


@dataclass
class Rendered:
    loaded: Loaded[RoleRecipe]
    paths: RolePaths
    dataset_info: Path


def render_roles(loaded: list[Loaded[RoleRecipe]]) -> list[Rendered]:
    """Render train.yaml and merge.yaml of each role recipe and register their datasets in
    datasets/dataset_info.json."""
    for one in loaded:  # a bad dataset.extra file is named by its recipe key before anything is written
        mixed_entries(one.recipe, one.where)
    info = render_dataset_info([one.recipe for one in loaded])
    return [Rendered(one, render_role(one), info) for one in loaded]


def check_roles(loaded: list[Loaded[RoleRecipe]]) -> list[Rendered]:
    """Render, then let LLaMA-Factory's own parser check every file; all problems at once."""
    rendered = render_roles(loaded)
    problems = [p for r in rendered for p in check_role(r.loaded, r.paths)]
    if problems:
        raise UserError(*problems)
    return rendered
