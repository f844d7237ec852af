"""The held-out validation problems (datasets/val.jsonl) and whether they still are: a model
trained on a problem would be scored on it, so `eval` refuses a split that changed since the
models were trained. The split each model was trained without is in its manifest
(`data.dataset.split`, copied from the dataset's sources record)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import file_hash
from orchestrator.core.common.paths import display, val_path
from orchestrator.core.data.competition import Question, read_dataset
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.role_paths import role_paths
from orchestrator.core.run_folders.trained import read_manifest

FIX = "set dataset.val_size (e.g. 0.1) in the answer recipe, then rebuild the datasets and retrain both models"


def check_recipes(models: list[Loaded[RoleRecipe]]) -> None:
    """What eval needs of the recipes, checked before anything is trained (`make eval` runs it
    first: check_before_training): every model holds problems out, and the same
    ones (val_size and seed alike: both roles' dataset stages write datasets/val.jsonl)."""
    for m in models:
        if m.recipe.dataset.val_size <= 0:
            where, recipe = m.where("dataset.val_size"), display(m.path)
            raise UserError(f"{where}: dataset.val_size is 0 for the {m.recipe.role} model"
                            + (f" ({recipe})" if where != recipe else "")
                            + f", so no problems are held out to evaluate on; {FIX}")
    splits = {(m.recipe.dataset.val_size, m.recipe.dataset.seed) for m in models}
    if len(splits) > 1:
        each = ", ".join(f"{display(m.path)} val_size {m.recipe.dataset.val_size} seed {m.recipe.dataset.seed}"
                         for m in models)
        raise UserError(f"the models would hold out different problems ({each}): give dataset.val_size and "
                        "dataset.seed the same values in every recipe (set them in the answer recipe the others "
                        "extend), then rebuild the datasets and retrain")


def check_before_training(models: list[Loaded[RoleRecipe]]) -> bool:
    """What `eval --check-only` checks, and make before it builds anything for `make eval`: the
    recipes (check_recipes) and, once every model is trained, that they were trained without
    datasets/val.jsonl's problems (check_split). True when every model is trained."""
    check_recipes(models)
    trained = all(role_paths(m.recipe).manifest.exists() for m in models)
    if trained:
        check_split([m.recipe for m in models])
    return trained


def _split_of(recipe: RoleRecipe) -> tuple[dict[str, Any] | None, Path]:
    paths = role_paths(recipe)
    trained = read_manifest(paths, recipe.role)
    if trained is None:
        raise UserError(f"{display(paths.manifest)} does not exist: train the {recipe.role} model first "
                        f"(make {recipe.role}-model)")
    return trained.split(), paths.manifest


def check_split(models: list[RoleRecipe]) -> Path:
    """datasets/val.jsonl, when it holds exactly the problems every model was trained without."""
    val = val_path()
    fix = FIX
    if not val.exists():
        raise UserError(f"{display(val)} does not exist: no problems were held out; {fix}")
    held = [p.id for p in read_dataset(val).problems]
    for recipe in models:
        role = recipe.role
        recorded, manifest = _split_of(recipe)
        split = recorded or {}
        trained = split.get("val_problems") or []
        where = f"the {role} model ({display(manifest)})"
        if not trained:
            raise UserError(f"{where} was trained without held-out problems, so it has seen every problem of "
                            f"{display(val)}; {fix}")
        if set(trained) != set(held):
            seen = len(set(held) - set(trained))
            raise UserError(
                f"{display(val)} changed since {where} was trained (held out {len(trained)} problems with "
                f"seed {split.get('seed')}, val_size {split.get('val_size')}; the file now holds {len(held)}, "
                f"{seen} of them trained on): rebuild the datasets with the same settings for both roles "
                f"and retrain (make answer-model evaluate-model)"
            )
        if split.get("val_hash") and split["val_hash"] != file_hash(val):
            raise UserError(f"{display(val)} changed since {where} was trained (same problems, other content): "
                            "rebuild the datasets and retrain")
    return val


def split_by_problem(questions: list[Question], val_size: float, seed: int) -> tuple[list[Question], list[Question]]:
    """Hold out whole problems: the questions of one problem never straddle the split."""
    if val_size <= 0:
        return questions, []
    problem_ids = sorted({q.problem_id for q in questions})
    random.Random(seed).shuffle(problem_ids)
    n_val = min(len(problem_ids) - 1, max(1, round(val_size * len(problem_ids))))
    held = set(problem_ids[:n_val])
    return [q for q in questions if q.problem_id not in held], [q for q in questions if q.problem_id in held]
