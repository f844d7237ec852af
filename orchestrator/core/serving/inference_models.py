"""Which models answer and evaluate, for `infer` and `eval` alike.

`inference.answer_models` lists the Answer models (the recipe's scalar answer_url / answer_recipe /
answer_model are shorthand for a list of one, folded in by the recipe's validator). The
command line's --answer-url / --answer-recipe / --answer-model fold in here, and each model to
serve gets its role recipe (role keys of --set apply to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import project_root
from orchestrator.core.recipes.loading import Loaded, load_role, named_run, with_flags
from orchestrator.core.recipes.schema import InferenceSection, PipelineRecipe, RoleRecipe


def _listed(value: str | Path | Sequence[str | Path] | None) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, Path)) else [str(v) for v in value]


def recipe_given(recipe: str | Path) -> str:
    """A recipe flag's value: a name of `orchestrator runs` (tiny-answer@1a2b3c4d, tiny-answer~5e6f7a8b)
    as it is, so it is shown and recorded as that name; a file as an absolute path."""
    return str(recipe) if named_run(str(recipe)) is not None else str(Path(recipe).resolve())


def answer_flags(
    inference: InferenceSection,
    listed: bool,
    urls: str | Sequence[str] | None,
    names: str | Sequence[str] | None,
    recipes: str | Path | Sequence[str | Path] | None,
) -> dict[str, tuple[str, Any]]:
    """--answer-url / --answer-recipe / --answer-model (each given any number of times, paired in
    order) as `with_flags` values over the recipe's `inference`: one model as answer_url /
    answer_recipe / answer_model (clearing a listed answer_models); several as answer_models;
    names alone rename the models the recipe lists (`listed`: it lists answer_models), in order."""
    urls, names, recipes = _listed(urls), _listed(names), _listed(recipes)
    if urls and recipes:
        raise UserError("give the Answer models as --answer-url or as --answer-recipe, not both")
    flag = "--answer-url" if urls else "--answer-recipe" if recipes else "--answer-model"
    given: list[dict[str, Any]] = [{"url": u} for u in urls] or [{"recipe": recipe_given(r)} for r in recipes]
    if not given and names and listed:
        given = [m.model_dump(exclude_none=True, exclude={"model"}) for m in inference.answer_models]
    if names and len(given) > 1 and len(names) != len(given):
        raise UserError(f"--answer-model given {len(names)} times for {len(given)} Answer models: "
                        "give one per model, in the same order (or none: each endpoint's own)")
    if not given:
        if len(names) > 1:
            raise UserError(f"--answer-model given {len(names)} times for one Answer model: "
                            "give one --answer-url per model, in the same order")
        return {"inference.answer_model": ("--answer-model", names[0] if names else None)}
    if len(given) == 1:
        return {
            "inference.answer_models": (flag, [] if listed else None),  # a listed ensemble is cleared
            "inference.answer_url": ("--answer-url", given[0].get("url")),
            "inference.answer_recipe": ("--answer-recipe", given[0].get("recipe")),
            "inference.answer_model": ("--answer-model", names[0] if names else None),
        }
    for m, name in zip(given, names or [""] * len(given), strict=True):
        if name:
            m["model"] = name
    return {"inference.answer_models": (flag, given)}


@dataclass
class Models:
    """The pipeline recipe with the flags folded in, and the role recipe of each model to serve."""

    pipeline: Loaded[PipelineRecipe]
    answers: list[Loaded[RoleRecipe] | None]  # per Answer model: its recipe to serve; None: an endpoint
    evaluate: Loaded[RoleRecipe] | None  # None: an endpoint
    # with `trained`: every model's role recipe, Answer models then the Evaluate model; an endpoint's
    # is taken to be the one inference.answer_recipe / evaluate_recipe trained
    trained: list[Loaded[RoleRecipe]] = field(default_factory=list)


def resolve_models(
    base: Loaded[PipelineRecipe],
    role_sets: Sequence[str],
    *,
    answer_urls: Sequence[str] = (),
    answer_names: Sequence[str] = (),
    answer_recipes: Sequence[str] = (),
    evaluate_recipe: str | None = None,
    flags: dict[str, tuple[str, Any]] | None = None,
    trained: bool = False,
) -> Models:
    """Fold the model flags (and any other inference `flags`) into `base`; load the role recipe
    of every model served, or with `trained` of every model."""
    loaded = with_flags(base, {
        **(flags or {}),
        "inference.evaluate_recipe": ("--evaluate-recipe",
                                      recipe_given(evaluate_recipe) if evaluate_recipe else None),
        **answer_flags(base.recipe.inference, bool((base.raw.get("inference") or {}).get("answer_models")),
                       answer_urls, answer_names, answer_recipes),
    })
    inf, root = loaded.recipe.inference, project_root()

    def role(name: str, recipe: str) -> Loaded[RoleRecipe]:
        return load_role(name, root / recipe, tuple(role_sets))

    if not trained:
        answers = [role("answer", m.recipe) if m.recipe else None for m in inf.answer_models]
        return Models(loaded, answers, None if inf.evaluate_url else role("evaluate", inf.evaluate_recipe))
    every = [role("answer", m.recipe or inf.answer_recipe) for m in inf.answer_models]
    evaluate = role("evaluate", inf.evaluate_recipe)
    return Models(loaded, [a if m.recipe else None for a, m in zip(every, inf.answer_models, strict=True)],
                  None if inf.evaluate_url else evaluate, [*every, evaluate])
