"""LLaMA-Factory train arguments (a train YAML, what a LlamaBoard save or a page training ran) as
the values a recipe extending a base recipe needs: only what differs from what the base renders,
each key where the recipe keeps it (OWNED: model, dataset, run folder, DeepSpeed), the rest under
`train:` as LLaMA-Factory's own names; what a recipe cannot hold is one error line each. The
table of docs/recipes.md ("LLaMA-Factory's keys in a recipe") is this module's."""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import did_you_mean
from orchestrator.core.common.paths import project_root
from orchestrator.core.llamafactory.configs import flat, train_sections
from orchestrator.core.llamafactory.parser import import_parser, known_arguments
from orchestrator.core.llamafactory.pasted import same_value
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.role_paths import model_path, role_paths

# Keys a LLaMA-Factory file leaves out that keep the base recipe's value: how often to log and
# save, caching and workers, where to report; not what is trained. Every other base key the
# file leaves out is removed (null), so LLaMA-Factory's default applies as it did for the file.
HOUSEKEEPING = frozenset({
    "do_train", "logging_steps", "save_steps", "save_total_limit", "save_only_model", "plot_loss", "report_to",
    "overwrite_cache", "preprocessing_num_workers", "dataloader_num_workers", "ddp_timeout",
})


@dataclass
class Imported:
    values: dict[str, Any] = field(default_factory=dict)  # recipe sections -> keys, only what differs from the base
    lines: list[str] = field(default_factory=list)  # how each recipe-owned key was mapped
    errors: list[str] = field(default_factory=list)  # what a recipe cannot hold

    def put(self, dotted: str, value: Any) -> None:
        section, key = dotted.split(".", 1)
        self.values.setdefault(section, {})[key] = value


def lf_defaults() -> dict[str, Any]:
    """LLaMA-Factory's defaults of its train arguments (enums as their values)."""
    from dataclasses import MISSING, fields

    parser = import_parser()
    out = {}
    for cls in parser._TRAIN_ARGS:
        for f in fields(cls):
            if f.default is not MISSING:
                out[f.name] = f.default.value if isinstance(f.default, enum.Enum) else f.default
    return out


def deepspeed_stage(value: str, source_dir: Path) -> tuple[int, bool] | None:
    """(ZeRO stage, offload) of a DeepSpeed config: read from the file where it is found (beside
    the imported file, or in the project), else from LLaMA-Factory's names ds_z3_offload_config.json."""
    for folder in (source_dir, project_root()):
        path = folder / value
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        zero = config.get("zero_optimization", {}) if isinstance(config, dict) else {}
        offload = (zero.get("offload_optimizer") or {}).get("device") == "cpu"
        return (int(zero.get("stage", 0)), offload)
    m = re.search(r"ds_z(\d)(_offload)?_config\.json$", value)
    return (int(m.group(1)), bool(m.group(2))) if m else None


def _model(imported: Imported, value: str, recipe: RoleRecipe, source_dir: Path, where: str) -> None:
    base = model_path(recipe)
    for folder in (source_dir, project_root()):
        candidate = (folder / value).resolve()
        if (candidate / "config.json").is_file() or Path(value).is_absolute():
            if candidate == base:
                return
            try:
                shown = str(candidate.relative_to(project_root()))
            except ValueError:  # outside the project: kept absolute
                shown = str(candidate)
            imported.put("model.path", shown)
            imported.put("model.name", "Custom")
            imported.lines.append(f"{where}: model_name_or_path {value} -> model.path {shown}")
            return
    imported.put("model.source", value)
    imported.put("model.path", None)
    imported.lines.append(f"{where}: model_name_or_path {value} -> model.source {value} (`orchestrator download "
                          f"{recipe.role}` fetches it from modelscope, where its id may differ)")


def to_recipe(args: dict[str, Any], where: str, base: Loaded[RoleRecipe], source_dir: Path,
              *, explicit: bool = True) -> Imported:
    """The recipe values that make `base` train what `args` trains; `where` names the file.
    explicit: a key the file sets and the base does not render is kept even at LLaMA-Factory's
    default (a hand-written file's `pref_beta: 0.1` says what it trains); else (what a page ran,
    every knob listed) only values other than the default are."""
    recipe = base.recipe
    ours = flat(train_sections(recipe, role_paths(recipe)))  # what the base renders
    defaults = lf_defaults()
    known = known_arguments("train")
    imported = Imported()

    def same_as_base(key: str, value: Any) -> bool:
        if key in ours:
            return same_value(key, value, ours[key])
        return not explicit and same_value(key, value, defaults.get(key))

    for key, value in args.items():
        if value is None:
            continue
        if key not in known:
            imported.errors.append(f"{where}: {key} is not a LLaMA-Factory train argument{did_you_mean(key, known)}")
        elif key == "model_name_or_path":
            _model(imported, str(value), recipe, source_dir, where)
        elif key == "template":
            if value != recipe.model.template:
                imported.put("model.template", value)
                imported.lines.append(f"{where}: template {value} -> model.template {value}")
        elif key == "dataset":
            if not same_value(key, value, ours.get(key)):
                imported.lines.append(f"{where}: dataset {value} -> the role's own {recipe.dataset_name} (built by "
                                      f"`orchestrator dataset`); more sets go under dataset.extra")
        elif key == "eval_dataset":
            if not same_value(key, value, ours.get(key)):
                imported.lines.append(f"{where}: eval_dataset {value} -> the role's own {recipe.eval_dataset_name}: "
                                      "whole problems held out of training by dataset.val_size (built by "
                                      "`orchestrator dataset`)")
        elif key == "do_train":
            if value is not True:
                imported.errors.append(f"{where}: do_train {value}: a recipe trains (`orchestrator train`); "
                                       "remove do_train or set it true")
        elif key == "dataset_dir":
            if not same_value(key, value, ours.get(key)):
                imported.lines.append(f"{where}: dataset_dir {value} -> always the project's datasets/")
        elif key == "output_dir":
            imported.lines.append(f"{where}: output_dir {value} -> runs/<name>/adapter (name: the new recipe's)")
        elif key == "overwrite_output_dir":
            imported.lines.append(f"{where}: overwrite_output_dir left out: `orchestrator train` resumes from its "
                                  "checkpoints; `--fresh` starts over, keeping the previous adapter aside")
        elif key == "trust_remote_code":
            if value is not True:
                imported.errors.append(f"{where}: trust_remote_code {value}: a recipe always renders true")
        elif key == "finetuning_type":
            if value != "lora":
                imported.errors.append(f"{where}: finetuning_type {value}: a recipe trains a LoRA adapter (merge and "
                                       "serving read one); use finetuning_type: lora")
        elif key == "adapter_name_or_path":
            imported.errors.append(f"{where}: adapter_name_or_path {value}: a recipe trains a new adapter on its base; "
                                   "merge that adapter into a model first (`llamafactory-cli export`) and import with "
                                   "model_name_or_path set to the merged model")
        elif key == "resume_from_checkpoint":
            imported.errors.append(f"{where}: resume_from_checkpoint {value}: `orchestrator train` resumes from "
                                   "runs/<name>/adapter's last checkpoint by itself; remove it")
        elif key == "deepspeed":
            found = deepspeed_stage(str(value), source_dir)
            if found is None or found[0] not in (2, 3):
                imported.errors.append(f"{where}: deepspeed {value}: not a ZeRO-2 or ZeRO-3 config a recipe renders; "
                                       "set distributed.deepspeed (2 or 3) and distributed.offload instead")
            elif (found[0], found[1]) != (recipe.distributed.deepspeed, recipe.distributed.offload):
                imported.put("distributed.deepspeed", found[0])
                imported.put("distributed.offload", found[1])
                imported.lines.append(f"{where}: deepspeed {value} -> distributed.deepspeed {found[0]}, "
                                      f"distributed.offload {str(found[1]).lower()}")
        elif key == "val_size":
            if float(value) != recipe.dataset.val_size:
                imported.put("dataset.val_size", float(value))
                imported.lines.append(f"{where}: val_size {value} -> dataset.val_size {value} (whole problems held "
                                      "out as the eval set)")
        elif key == "ray_num_workers":
            if int(value) != recipe.distributed.ray_workers:
                imported.put("distributed.ray_workers", int(value))
                imported.lines.append(f"{where}: ray_num_workers {value} -> distributed.ray_workers {value}")
        elif key in ("eval_strategy", "eval_steps", "per_device_eval_batch_size") and recipe.dataset.val_size > 0 \
                and same_value(key, value, ours.get(key)):
            continue
        elif not same_as_base(key, value):
            imported.put(f"train.{key}", value)

    owned = {"model_name_or_path", "template", "dataset", "eval_dataset", "dataset_dir", "output_dir", "deepspeed",
             "adapter_name_or_path", "trust_remote_code", "do_train"}
    left_out = [key for key, value in recipe.train.items()
                if value is not None and key not in args and key not in HOUSEKEEPING and key not in owned
                and not same_value(key, value, defaults.get(key))]
    for key in left_out:
        imported.put(f"train.{key}", None)
    if left_out:
        imported.lines.append(f"{where}: leaves out {', '.join(left_out)}: removed from the recipe (null), so "
                              "LLaMA-Factory's defaults apply as they did for the file")
    return imported
