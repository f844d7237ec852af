"""What decides whether a role's trained adapter is still current, by content: the rendered
train YAML, the dataset files it trains on, the base model. `train` compares it with the
manifest's record; `recipe import` records it for an adopted LlamaBoard training."""

from __future__ import annotations

from pathlib import Path

from orchestrator.core.common.files import file_hash
from orchestrator.core.common.paths import datasets_dir, project_root
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.role_paths import RolePaths, model_path, role_paths, sft_of
from orchestrator.core.run_folders.trained import adapter_identity, base_identity, portable_hash


def dataset_files(loaded: Loaded[RoleRecipe]) -> dict[str, Path]:
    """The dataset files a role trains on, by dataset name."""
    recipe = loaded.recipe
    names = [recipe.dataset_name, *([recipe.eval_dataset_name] if recipe.has_eval_set else [])]
    files = {name: datasets_dir() / f"{name}.json" for name in names}
    files.update({name: project_root() / file for name, file in recipe.dataset.extra.items() if file})
    return files


def training_inputs(loaded: Loaded[RoleRecipe], paths: RolePaths) -> dict[str, object]:
    """What decides whether a trained adapter is still current: the rendered train YAML (its
    project, base model and run folders as placeholders), the content of every dataset file it trains
    on, the base model by content. Timestamps and absolute paths do not count."""
    files = dataset_files(loaded)
    base = model_path(loaded.recipe)
    inputs: dict[str, object] = {
        "train_yaml": portable_hash(paths.train_yaml, base, paths.run_dir),
        "datasets": {name: file_hash(path) if path.is_file() else None for name, path in files.items()},
        "base_model": base_identity(base),
    }
    if sft := sft_of(loaded.recipe):  # a preference training: the SFT model it starts from, by its adapter
        inputs["sft_model"] = adapter_identity(role_paths(sft.recipe), sft.recipe.role)
    return inputs
