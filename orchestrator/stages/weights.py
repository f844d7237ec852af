"""Stage: `weights`, what serving a role loads: `merged` or `adapter` (the base + the adapter).
serve.weights decides; the planner (`orchestrator run`) asks the same, to know where a model ends."""

from __future__ import annotations

from orchestrator.core.llamafactory.quantization import served_weights
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import RoleRecipe


def weights(loaded: Loaded[RoleRecipe]) -> str:
    return served_weights(loaded.recipe)
