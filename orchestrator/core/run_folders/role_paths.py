"""Where a role's run lives: runs/<name>/ and the files a training, a merge and a GPTQ export
leave there (RolePaths), and the base model a role recipe names (model.path, else
<models_dir>/<source>; for a preference training, the SFT model it builds on). Every stage
finds them here, from the recipe alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import inside, project_root, runs_dir
from orchestrator.core.recipes.loading import Loaded, load_role
from orchestrator.core.recipes.schema import RoleRecipe


@dataclass(frozen=True)
class RolePaths:
    """The files of one role's run folder, runs/<name>/."""

    run_dir: Path

    @property
    def train_yaml(self) -> Path:
        return self.run_dir / "train.yaml"

    @property
    def merge_yaml(self) -> Path:
        return self.run_dir / "merge.yaml"

    @property
    def adapter(self) -> Path:
        return self.run_dir / "adapter"

    @property
    def merged(self) -> Path:
        return self.run_dir / "merged"

    @property
    def deepspeed(self) -> Path:
        return self.run_dir / "deepspeed.json"

    @property
    def calibration(self) -> Path:
        return self.run_dir / "calibration.jsonl"

    @property
    def manifest(self) -> Path:
        return self.run_dir / "manifest.json"

    @property
    def log(self) -> Path:
        return self.run_dir / "train.log"


ADAPTER_FILE = "adapter_model.safetensors"  # what a finished `llamafactory-cli train` leaves


def is_trained(paths: RolePaths) -> bool:
    """A finished training recorded by `orchestrator train` (its adapter and manifest)."""
    return (paths.adapter / ADAPTER_FILE).exists() and paths.manifest.exists()


def role_paths(recipe: RoleRecipe) -> RolePaths:
    return RolePaths(inside(recipe.run_name, runs_dir(), "name"))


def sft_of(recipe: RoleRecipe) -> Loaded[RoleRecipe] | None:
    """The SFT recipe a preference training builds on (preference.sft_recipe), loaded; None
    for any other recipe."""
    file = recipe.preference.sft_recipe
    if not file:
        return None
    path = project_root() / file
    if not path.is_file():
        raise UserError(f"preference.sft_recipe: {file} does not exist (looked for {path}); name the SFT Answer "
                        "recipe, e.g. recipes/answer.yaml")
    return load_role("answer", path)


def model_path(recipe: RoleRecipe, _depth: int = 0) -> Path:
    """The base model directory: model.path, else <models_dir>/<source>. A preference training
    (preference.sft_recipe) starts from the SFT model: its merged model (preference.reference
    merged), or its base, the SFT adapter going on training on top (adapter)."""
    if (sft := sft_of(recipe)) is not None:
        if _depth > 8:
            raise UserError(f"preference.sft_recipe: {recipe.preference.sft_recipe} leads back to itself")
        if recipe.preference.reference == "merged":
            return role_paths(sft.recipe).merged
        return model_path(sft.recipe, _depth + 1)
    if recipe.model.path:
        return (project_root() / recipe.model.path).resolve()
    return (project_root() / recipe.model.models_dir / recipe.model.source).resolve()
