"""Stage: `recipe import FILE --role ROLE`: an LLaMA-Factory train YAML, LlamaBoard's saved
arguments (llamaboard_config/<time>.yaml) or a page training's training_args.yaml becomes a
recipe that extends a base recipe with only what differs (core/llamafactory/imported.py), checked
like a hand-written one (our schema, then LLaMA-Factory's parser). A finished page training is
adopted: its adapter is copied into the new recipe's run folder with our manifest, so training
with the recipe trains nothing and merge and infer serve that adapter."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_text
from orchestrator.core.common.paths import display, project_root
from orchestrator.core.data.sources import training_data
from orchestrator.core.llamafactory.checks import check_roles
from orchestrator.core.llamafactory.imported import to_recipe
from orchestrator.core.llamafactory.llamaboard_save import is_llamaboard_save, train_args
from orchestrator.core.recipes.loading import Loaded, default_role_recipe, load_role
from orchestrator.core.recipes.reading import check_tree, load_yaml_file
from orchestrator.core.recipes.schema import PREFERENCE_STAGES, RoleRecipe
from orchestrator.core.run_folders.records import Manifest, write_record_file
from orchestrator.core.run_folders.role_paths import ADAPTER_FILE, role_paths
from orchestrator.core.run_folders.trained import adapter_hash
from orchestrator.core.run_folders.training_inputs import training_inputs
from orchestrator.core.project.identity import value_hash

KINDS = {
    "lf": "an LLaMA-Factory train YAML",
    "save": "LlamaBoard's saved arguments",
    "training": "a page training's training_args.yaml",
}


@dataclass
class ImportResult:
    out: Path
    kind: str
    lines: list[str] = field(default_factory=list)
    adopted: Path | None = None  # the run folder's adapter, when a finished training was adopted
    name: str = ""


def read_source(path: Path) -> dict[str, Any]:
    """The file as a mapping; every way it is not one is one UserError naming it."""
    where = display(path)
    data = load_yaml_file(path, "train config")
    if not isinstance(data, dict) or not data:
        kind = "an empty file" if not data else f"a YAML {type(data).__name__.replace('dict', 'mapping')}"
        raise UserError(f"{where}: {kind}, not an LLaMA-Factory train config or a LlamaBoard save (a mapping of "
                        "argument names to values)")
    check_tree(data, where)
    return {str(k): _yaml11_float(v) for k, v in data.items()}


def _yaml11_float(value: Any) -> Any:
    """`1e-4`, which PyYAML reads as text and LLaMA-Factory (OmegaConf) as a number."""
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value.strip()):
        return float(value)
    return value


def kind_of(path: Path, data: dict[str, Any]) -> str:
    if is_llamaboard_save(data):
        return "save"
    return "training" if path.name == "training_args.yaml" else "lf"


def _default_out(source: Path, kind: str, role: str) -> Path:
    stem = source.parent.name if kind == "training" else source.stem
    if kind == "save":
        stem = f"llamaboard-{stem}"
    stem = re.sub(r"[^\w.-]+", "-", stem).strip("-.")[:40] or "imported"
    return project_root() / "recipes" / f"{stem}-{role}.yaml"


def _recipe_text(values: dict[str, Any], base: Loaded[RoleRecipe], out: Path, source: Path, kind: str,
                 name: str) -> str:
    extends = os.path.relpath(base.path.resolve(), out.parent.resolve())
    role = base.recipe.role
    header = [
        f"# Imported from {display(source)} ({KINDS[kind]}) by `orchestrator recipe import`: only what differs",
        f"# from {display(base.path)}, each key where a recipe keeps it (docs/recipes.md).",
        "#",
        f"#   orchestrator check {role} --recipe {display(out)}",
        f"#   orchestrator train {role} --recipe {display(out)}",
    ]
    body = {"extends": extends, "name": name, **values}
    return "\n".join(header) + "\n" + yaml.safe_dump(body, allow_unicode=True, sort_keys=False, default_flow_style=False)


def import_recipe(source: Path, role: str, base_recipe: str | None = None, out: str | None = None,
                  force: bool = False) -> ImportResult:
    """Write the recipe (nothing when any value is refused) and adopt a finished page training."""
    data = read_source(source)
    kind = kind_of(source, data)
    where = display(source)
    base = load_role(role, base_recipe or default_role_recipe(role))
    args = train_args(data, where) if kind == "save" else data
    imported = to_recipe(args, where, base, source.parent.resolve(), explicit=kind == "lf")
    if imported.errors:
        raise UserError(*imported.errors)
    out_path = Path(out) if out else _default_out(source, kind, role)
    out_path = out_path if out_path.is_absolute() else Path.cwd() / out_path
    name = re.sub(r"[^\w.-]+", "-", out_path.stem)[:60]
    if out_path.exists() and not force:
        raise UserError(f"{display(out_path)} exists: name another with --out FILE, or --force to replace it")
    if out_path.resolve() == base.path.resolve():
        raise UserError(f"--out {display(out_path)} is the base recipe itself: name a new file")
    if name == base.recipe.run_name:
        raise UserError(f"--out {display(out_path)} would train into runs/{name}/, the base recipe's own run folder: "
                        "name the file otherwise")
    if base.recipe.train.get("stage") != imported.values.get("train", {}).get("stage") and \
            imported.values.get("train", {}).get("stage") in PREFERENCE_STAGES and not base.recipe.is_preference:
        # a preference config: on the base recipe's own model (the SFT model as its reference), its own pairs
        pairs = f"pref_{name.replace('-', '_')}"
        imported.put("preference.sft_recipe", display(base.path))
        imported.put("dataset.name", pairs)
        imported.lines.append(f"{where}: stage {imported.values['train']['stage']} -> preference.sft_recipe "
                              f"{display(base.path)} (the SFT model, the reference), its pairs in datasets/{pairs}.json "
                              "sampled from that model (docs/levers.md)")
    if kind == "save":
        imported.lines.insert(0, f"{where}: read as LlamaBoard would train it (LLaMA-Factory's webui runner); the page "
                                 "saves no model path: the base's model stays")
    previous = out_path.read_bytes() if out_path.exists() else None
    atomic_write_text(out_path, _recipe_text(imported.values, base, out_path, source, kind, name))
    try:
        loaded = load_role(role, out_path)
        check_roles([loaded])
    except UserError:
        if previous is None:
            out_path.unlink(missing_ok=True)
        else:
            out_path.write_bytes(previous)
        raise
    result = ImportResult(out_path, kind, imported.lines, name=loaded.recipe.run_name)
    if kind == "training":
        result.adopted = adopt(loaded, source.parent, args, result.lines)
    return result


def adopt(loaded: Loaded[RoleRecipe], folder: Path, args: dict[str, Any], lines: list[str]) -> Path | None:
    """Copy a finished page training's adapter into the recipe's run folder with our manifest, so
    `train` finds it current; None (said in `lines`) when it is not the recipe's training."""
    recipe = loaded.recipe
    where = display(folder)
    if not (folder / ADAPTER_FILE).is_file():
        lines.append(f"{where}: no {ADAPTER_FILE} (unfinished or failed): nothing adopted; "
                     f"`orchestrator train {recipe.role} --recipe {display(loaded.path)}` trains it")
        return None
    trained_on = [name.strip() for name in str(args.get("dataset", "")).split(",")]
    if trained_on != [recipe.dataset_name, *recipe.dataset.extra]:
        lines.append(f"{where}: trained on {args.get('dataset')}, not the role's {recipe.dataset_name}: nothing "
                     f"adopted; `orchestrator train {recipe.role} --recipe {display(loaded.path)}` trains it")
        return None
    paths = role_paths(recipe)
    if (paths.adapter / ADAPTER_FILE).is_file():
        raise UserError(f"{display(paths.adapter)} already holds an adapter: import under another --out name")
    staging = paths.run_dir / ".adopting"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folder, staging)
    if paths.adapter.exists():  # an unfinished training's checkpoints of this new name: the adopted one wins
        shutil.rmtree(paths.adapter)
    staging.rename(paths.adapter)
    logged = []
    log = paths.adapter / "trainer_log.jsonl"
    for line in (log.read_text(encoding="utf-8").splitlines() if log.is_file() else []):
        try:
            logged.append(json.loads(line))
        except ValueError:
            continue
    losses = [row["loss"] for row in logged if isinstance(row, dict) and row.get("loss") is not None]
    inputs = training_inputs(loaded, paths)
    write_record_file(paths.manifest, Manifest(
        role=recipe.role,
        recipe=loaded.raw,
        recipe_file=str(loaded.path),
        train_yaml=str(paths.train_yaml),
        adapter=str(paths.adapter),
        adopted_from=str(folder.resolve()),  # a LlamaBoard training, brought back by `recipe import`
        started=time.strftime("%Y-%m-%dT%H:%M:%S"),
        steps=logged[-1].get("current_steps") if logged else None,
        final_loss=losses[-1] if losses else None,
        launched="LlamaBoard",
        data=training_data(recipe),  # the role's own dataset, which the page trained on (checked above)
        inputs=inputs,  # what `train` compares: the recipe's training is this one
        identity=value_hash(inputs),  # where it is kept and how `orchestrator runs` finds it (core/run_folders/kept.py)
        adapter_hash=adapter_hash(paths.adapter),
    ))
    lines.append(f"{where}: adopted as {display(paths.adapter)} (manifest {display(paths.manifest)}): "
                 f"`orchestrator train {recipe.role} --recipe {display(loaded.path)}` finds it up to date")
    return paths.adapter
