"""The reference model of a preference training, as LLaMA-Factory 0.9.5 builds it, and the
recipes `check` refuses because theirs would not be the SFT model.

LLaMA-Factory's DPO (train/dpo/workflow.py, train/trainer_utils.py create_ref_model) takes
`ref_model` (+ `ref_model_adapters`) when given; else, with LoRA, no reference model at all: the
trainer computes the reference with the policy's adapter disabled (train/dpo/trainer.py,
`disable_adapter()`). A DPO adapter on the base model, or one going on training an SFT adapter,
is therefore measured against the base model, not the SFT model (its users' issues #8974, #5708,
#6235: loss 0 and accuracy 1 within a few steps). Here the reference is the SFT model of
`preference.sft_recipe`: DPO trains a new adapter on its merged model (preference.reference:
merged), or resumes its adapter with ref_model = its base and ref_model_adapters = its adapter
(adapter: a quantized base, which nothing merges into). pref_loss orpo and simpo use no reference.
"""

from __future__ import annotations

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import display
from orchestrator.core.llamafactory.quantization import base_quantization, served_weights
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.role_paths import model_path, role_paths, sft_of

NO_REFERENCE = ("orpo", "simpo")  # LLaMA-Factory's pref_loss values without a reference model (use_ref_model)


def uses_reference(recipe: RoleRecipe) -> bool:
    return recipe.is_preference and recipe.train.get("pref_loss") not in NO_REFERENCE  # (unset: sigmoid, which has one)


def reference_line(recipe: RoleRecipe) -> str | None:
    """Which model is the reference, in words (for `check`); None for a recipe without one."""
    sft = sft_of(recipe)
    if sft is None or not uses_reference(recipe):
        return None
    sft_paths = role_paths(sft.recipe)
    if recipe.preference.reference == "merged":
        return (f"reference: the SFT model {display(sft_paths.merged)} (a new adapter trained on it; "
                "LLaMA-Factory's reference is that model with the adapter disabled)")
    return (f"reference: the SFT model {display(model_path(sft.recipe))} + {display(sft_paths.adapter)} "
            "(ref_model + ref_model_adapters; its adapter goes on training)")


def reference_problems(loaded: Loaded[RoleRecipe]) -> list[str]:
    """A preference recipe whose reference would be the base model, or whose SFT model cannot
    be what it needs: one line each, with the reason and the fix."""
    recipe = loaded.recipe
    if not recipe.is_preference:
        return []
    stage = recipe.train.get("stage")
    try:
        sft = sft_of(recipe)
    except UserError as e:
        return [f"{loaded.where('preference.sft_recipe')}: {e.lines[0]}"]
    if sft is None:
        if uses_reference(recipe):
            return [f"{loaded.where('train.stage')}: train.stage {stage} without preference.sft_recipe: LLaMA-Factory "
                    f"would take the base model {display(model_path(recipe))} as the reference (with LoRA and no "
                    "ref_model it disables the adapter), and there would be no SFT model to sample the pairs from; "
                    "name the SFT Answer recipe in preference.sft_recipe (see recipes/tiny-answer-dpo.yaml)"]
        return [f"{loaded.where('train.stage')}: train.stage {stage} needs preference.sft_recipe: the pairs are "
                "the SFT model's own replies"]
    where, ref = loaded.where("preference.sft_recipe"), loaded.where("preference.reference")
    problems = []
    if role_paths(sft.recipe) == role_paths(recipe):
        problems.append(f"{where}: preference.sft_recipe {recipe.preference.sft_recipe} is this recipe's own run "
                        f"(runs/{recipe.run_name}); name the SFT recipe, and give this one a name: of its own")
    if sft.recipe.is_preference and recipe.preference.reference == "adapter":
        problems.append(f"{ref}: preference.reference adapter goes on training an SFT adapter; "
                        f"{recipe.preference.sft_recipe} is itself a preference training: use reference merged")
    split = (recipe.dataset.val_size, recipe.dataset.seed)
    if split != (sft.recipe.dataset.val_size, sft.recipe.dataset.seed):
        problems.append(f"{loaded.where('dataset.val_size')}: dataset.val_size {split[0]} and seed {split[1]} differ "
                        f"from the SFT recipe's ({sft.recipe.dataset.val_size}, {sft.recipe.dataset.seed}): the pairs "
                        "would hold out other problems than the SFT model did; extend the SFT recipe or copy them")
    if recipe.preference.reference == "merged":
        if method := base_quantization(sft.recipe):
            problems.append(f"{ref}: preference.reference merged, but the SFT model's base "
                            f"{display(model_path(sft.recipe))} is {method}-quantized and nothing merges into it; "
                            "set preference.reference: adapter (ref_model + ref_model_adapters name the SFT model)")
        elif served_weights(sft.recipe) == "adapter":
            problems.append(f"{ref}: preference.reference merged, but {recipe.preference.sft_recipe} serves its "
                            "adapter (serve.weights adapter), so its merged model is never built; set "
                            "preference.reference: adapter, or serve.weights merged in the SFT recipe")
    elif recipe.train.get("finetuning_type") not in (None, "lora"):  # (unset: LLaMA-Factory's lora)
        problems.append(f"{ref}: preference.reference adapter goes on training the SFT LoRA adapter; "
                        f"train.finetuning_type is {recipe.train.get('finetuning_type')}: use reference merged")
    return problems
