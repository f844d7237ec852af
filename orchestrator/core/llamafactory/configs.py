"""What we render for LLaMA-Factory from a role recipe: runs/<name>/train.yaml and merge.yaml
(its own keys under its example YAMLs' `### model`, `### method`... headers, the derived ones
filled in so train, merge and serve agree), the DeepSpeed JSON, and datasets/dataset_info.json.
`render_roles` is the `render` command and the first step of `check`, `train`, `merge` and `webui`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_json, atomic_write_text
from orchestrator.core.common.paths import datasets_dir, display
from orchestrator.core.common.render import render
from orchestrator.core.data.mixed_datasets import ALPACA_COLUMNS, mixed_entries
from orchestrator.core.llamafactory.parser import Resolved
from orchestrator.core.llamafactory.pasted import not_ours, pasted_problems
from orchestrator.core.llamafactory.quantization import QUANTIZE_KEYS
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.role_paths import RolePaths, model_path, role_paths

# LLaMA-Factory's example YAMLs group keys under these headers.
_METHOD = re.compile(r"^(stage|do_train|finetuning_type|lora_|lora$|use_(dora|rslora|pissa)|pissa_|loraplus_|quantization_|double_quantization|freeze_|oft_|additional_target|create_new_adapter|pref_|dpo_|kto_|simpo_|use_galore|galore_|use_apollo|apollo_|use_badam|badam_|rope_scaling|flash_attn|enable_liger|use_unsloth|train_mm_proj_only|freeze_vision)")
_DATASET = re.compile(r"^(cutoff_len|max_samples|overwrite_cache|preprocessing_num_workers|dataloader_num_workers|packing|neat_packing|train_on_prompt|mask_history|streaming|buffer_size|mix_strategy|interleave_probs|tokenized_path|tool_format|default_system|enable_thinking|media_dir)")
_OUTPUT = re.compile(r"^(logging_steps|save_steps|save_strategy|save_total_limit|save_only_model|plot_loss|overwrite_output_dir|report_to|run_name|logging_dir)")
_EVAL = re.compile(r"^(val_size|per_device_eval_batch_size|eval_strategy|eval_steps|do_eval|compute_accuracy|predict_with_generate|load_best_model_at_end|metric_for_best_model)")


def _group(args: dict[str, Any]) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {"method": {}, "dataset": {}, "output": {}, "train": {}, "eval": {}}
    for key, value in args.items():
        if value is None:
            continue
        for name, pattern in (("method", _METHOD), ("dataset", _DATASET), ("output", _OUTPUT), ("eval", _EVAL)):
            if pattern.match(key):
                groups[name][key] = value
                break
        else:
            groups["train"][key] = value
    return groups


def train_sections(recipe: RoleRecipe, paths: RolePaths) -> dict[str, dict[str, Any]]:
    """The train YAML as LLaMA-Factory's headed sections, in order."""
    groups = _group(not_ours(recipe.train))  # ours are rendered below; pasted ones agree (pasted.py)
    names = ",".join([recipe.dataset_name, *recipe.dataset.extra])  # mixed by mix_strategy (train:)
    dataset = {"dataset": names, "template": recipe.model.template, "dataset_dir": str(datasets_dir())}
    if recipe.dataset.val_size > 0:  # the held-out problems are evaluated as training goes
        dataset["eval_dataset"] = recipe.eval_dataset_name
        groups["eval"] = {
            "eval_strategy": "steps",
            "eval_steps": recipe.train.get("save_steps") or 100,
            "per_device_eval_batch_size": recipe.train.get("per_device_train_batch_size") or 1,
            **groups["eval"],
        }
    sections = {
        "model": {"model_name_or_path": str(model_path(recipe)), "trust_remote_code": True},
        "method": groups["method"],
        "dataset": {**dataset, **groups["dataset"]},
        "output": {"output_dir": str(paths.adapter), **groups["output"]},
        "train": groups["train"],
        "eval": groups["eval"],
    }
    if recipe.distributed.deepspeed:
        sections["method"]["deepspeed"] = str(paths.deepspeed)
    if recipe.distributed.ray_workers:
        sections["train"]["ray_num_workers"] = recipe.distributed.ray_workers
    if recipe.distributed.nnodes > 1:  # each node its own disk: its checkpoints are what it resumes from
        sections["train"].setdefault("save_on_each_node", True)
    return {name: keys for name, keys in sections.items() if keys}


def merge_sections(recipe: RoleRecipe, paths: RolePaths) -> dict[str, dict[str, Any]]:
    export = {"export_dir": str(paths.merged)}
    export.update({k: v for k, v in not_ours(recipe.merge).items() if v is not None and k not in QUANTIZE_KEYS})
    return {
        "model": {
            "model_name_or_path": str(model_path(recipe)),
            "adapter_name_or_path": str(paths.adapter),
            "template": recipe.model.template,
            **finetuning_type(recipe),
            "trust_remote_code": True,
        },
        "export": export,
    }


def finetuning_type(recipe: RoleRecipe) -> dict[str, Any]:
    """train.finetuning_type where the recipe sets it; else none, and LLaMA-Factory's default
    applies to the merge and the server as it did to the training."""
    value = recipe.train.get("finetuning_type")
    return {} if value is None else {"finetuning_type": value}


def flat(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {k: v for keys in sections.values() for k, v in keys.items()}


def deepspeed_config(recipe: RoleRecipe) -> dict[str, Any]:
    """LLaMA-Factory's ZeRO-2/3 config (examples/deepspeed), from the template."""
    ds = recipe.distributed
    return json.loads(render("llamafactory/deepspeed.json.j2", stage=ds.deepspeed, offload=ds.offload))


def render_role(loaded: Loaded[RoleRecipe]) -> RolePaths:
    """Write runs/<name>/train.yaml and merge.yaml (and the DeepSpeed JSON) for a role."""
    recipe = loaded.recipe
    paths = role_paths(recipe)
    problems = pasted_problems(loaded, flat(train_sections(recipe, paths)), flat(merge_sections(recipe, paths)))
    if problems:
        raise UserError(*problems)
    header = f"generated by `orchestrator render {recipe.role}` from {display(loaded.path)}; edit the recipe, not this file"
    atomic_write_text(
        paths.train_yaml, render("llamafactory/train.yaml.j2", header=header, sections=train_sections(recipe, paths))
    )
    atomic_write_text(
        paths.merge_yaml, render("llamafactory/merge.yaml.j2", header=header, sections=merge_sections(recipe, paths))
    )
    if recipe.distributed.deepspeed:
        atomic_write_json(paths.deepspeed, deepspeed_config(recipe))
    return paths


def dataset_entries(recipe: RoleRecipe) -> dict[str, str]:
    """dataset name -> file name, for the role's training set (and validation set)."""
    entries = {recipe.dataset_name: f"{recipe.dataset_name}.json"}
    if recipe.dataset.val_size > 0:
        entries[recipe.eval_dataset_name] = f"{recipe.eval_dataset_name}.json"
    return entries


def render_dataset_info(recipes: list[RoleRecipe]) -> Path:
    """datasets/dataset_info.json with an entry per role, keeping entries the user added."""
    path = datasets_dir() / "dataset_info.json"
    existing: dict[str, Any] = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise UserError(f"{path}: not valid JSON ({e}); fix or delete it, it is regenerated") from None
        if not isinstance(existing, dict):
            raise UserError(f"{path}: must be a JSON object; delete it, it is regenerated")
    entries = {}
    for recipe in recipes:
        for name, file_name in dataset_entries(recipe).items():
            entries[name] = {"file_name": file_name, "formatting": "alpaca", "columns": ALPACA_COLUMNS}
        entries.update(mixed_entries(recipe))
    ours = json.loads(render("llamafactory/dataset_info.json.j2", entries=entries))
    atomic_write_json(path, {**existing, **ours})
    return path



@dataclass
class Rendered:
    loaded: Loaded[RoleRecipe]
    paths: RolePaths
    dataset_info: Path
    resolved: Resolved | None = None  # once checked (checks.check_roles): what LLaMA-Factory resolved


def render_roles(loaded: list[Loaded[RoleRecipe]]) -> list[Rendered]:
    """Render train.yaml and merge.yaml of each role recipe and register their datasets in
    datasets/dataset_info.json."""
    for one in loaded:  # a bad dataset.extra file is named by its recipe key before anything is written
        mixed_entries(one.recipe, one.where)
    info = render_dataset_info([one.recipe for one in loaded])
    return [Rendered(one, render_role(one), info) for one in loaded]
