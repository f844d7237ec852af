"""Stage: fetch a role's base model from modelscope, unless a complete local copy exists."""

from __future__ import annotations

import shutil
from pathlib import Path

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_text
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.role_paths import model_path, sft_of

COMPLETE = ".orchestrator-complete"


def is_complete(path: Path) -> bool:
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    return (path / "config.json").exists() and has_weights


def download(loaded: Loaded[RoleRecipe]) -> Path:
    """The base model directory, downloaded into <models_dir>/<source> when needed."""
    role_recipe = loaded.recipe
    if sft := sft_of(role_recipe):  # a preference training starts from its SFT model: that one's base
        return download(sft)
    model, target = role_recipe.model, model_path(role_recipe)
    if model.path:
        if not is_complete(target):
            raise UserError(
                f"model.path {model.path} holds no model (config.json and weights): put the model files "
                f"there, or remove model.path to download {model.source}"
            )
        return target
    if is_complete(target) and (target / COMPLETE).exists():
        return target
    tmp = target.with_name(target.name + ".partial")
    try:
        from modelscope import snapshot_download

        snapshot_download(model.source, local_dir=str(tmp))
    except Exception as e:  # noqa: BLE001 - any failure of the hub client ends here
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(
            f"cannot download {model.source} from modelscope ({reason}); put the model files in "
            f"{target} (or set model.path in the recipe) and run again"
        ) from None
    if not is_complete(tmp):
        raise UserError(f"modelscope gave no complete model for {model.source} in {tmp}; put the files in {target}")
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    atomic_write_text(target / COMPLETE, f"{model.source}\n")
    return target
