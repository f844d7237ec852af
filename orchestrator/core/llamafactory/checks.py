"""Every rendered config checked by LLaMA-Factory's own parser before anything is launched: the
recipe's `train:` and `merge:` keys against its argument classes, the chat template against its
templates, each config parsed twice (as command-line flags, then as the rendered YAML file),
the datasets against dataset_info.json, and the quantization of the base. The `check` command.
What the parser resolved is kept with its acceptance and handed on (Rendered.resolved): the
values every stage reads, LLaMA-Factory's defaults included."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from typing import Any

from orchestrator.core.common.errors import UserError, did_you_mean
from orchestrator.core.common.paths import datasets_dir
from orchestrator.core.llamafactory.configs import (
    Rendered,
    dataset_entries,
    flat,
    merge_sections,
    render_roles,
    train_sections,
)
from orchestrator.core.llamafactory.launch import missing_extras
from orchestrator.core.llamafactory.parser import (
    Accepted,
    Resolved,
    blame,
    import_parser,
    known_arguments,
    parse_args,
    read_rendered,
)
from orchestrator.core.llamafactory.quantization import quantization_problems
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.role_paths import RolePaths


def check_roles(loaded: list[Loaded[RoleRecipe]]) -> list[Rendered]:
    """Render, then let LLaMA-Factory's own parser check every file; all problems at once."""
    rendered = render_roles(loaded)
    checked = [_check(r.loaded, r.paths) for r in rendered]
    problems = [p for found, _ in checked for p in found]
    if problems:
        raise UserError(*problems)
    return [dataclasses.replace(r, resolved=resolved) for r, (_, resolved) in zip(rendered, checked)]


# Where a run folder remembers the train and merge configs LLaMA-Factory's parser accepted.
CHECKED = ".llamafactory-accepted"


def check_role(loaded: Loaded[RoleRecipe], paths: RolePaths) -> list[str]:
    """Problems LLaMA-Factory's parser finds in the rendered train and merge configs (not asked
    again of configs it accepted, parser.Accepted), the optional packages the recipe needs, the
    datasets and the quantization of the base."""
    return _check(loaded, paths)[0]


def _check(loaded: Loaded[RoleRecipe], paths: RolePaths) -> tuple[list[str], Resolved | None]:
    """check_role's problems, and what LLaMA-Factory resolved (None where it refused)."""
    recipe = loaded.recipe
    train, merge = flat(train_sections(recipe, paths)), flat(merge_sections(recipe, paths))
    rendered = [p.read_text(encoding="utf-8") if p.exists() else None for p in (paths.train_yaml, paths.merge_yaml)]
    accepted = Accepted(paths.run_dir / CHECKED, recipe.train, recipe.merge, recipe.model.template, train, merge,
                        rendered, code=[__file__])
    values = accepted.values() if accepted.before() else None  # accepted before without its values: again
    known = values is not None
    problems = ([] if known else _unknown_names(loaded)) + missing_extras(loaded)
    if problems:
        return problems, None
    if values is None:
        problems, values = _parsed(loaded, paths, train, merge)
        if not problems:
            accepted.remember(values)

    info_path = datasets_dir() / "dataset_info.json"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    for name in [*dataset_entries(recipe), *recipe.dataset.extra]:
        if name not in info:
            problems.append(f"{info_path}: dataset {name} is not defined (run `orchestrator render {recipe.role}`)")
    problems += quantization_problems(loaded)
    return problems, Resolved(values["train"], values["merge"]) if values and not problems else None


def _unknown_names(loaded: Loaded[RoleRecipe]) -> list[str]:
    """The recipe's train: and merge: keys LLaMA-Factory has no argument for, and a chat template
    it does not know."""
    recipe = loaded.recipe
    problems = []
    for section, kind, keys in (("train", "train", recipe.train), ("merge", "infer", recipe.merge)):
        valid = known_arguments(kind)
        for key in keys:
            if key not in valid:
                dotted = f"{section}.{key}"
                problems.append(
                    f"{loaded.where(dotted)}: {dotted} is not a LLaMA-Factory argument{did_you_mean(key, valid)}"
                )
    from llamafactory.data.template import TEMPLATES

    if recipe.model.template not in TEMPLATES:
        problems.append(
            f"{loaded.where('model.template')}: model.template {recipe.model.template} is not a LLaMA-Factory "
            f"chat template{did_you_mean(recipe.model.template, TEMPLATES)}"
        )
    return problems


def _parsed(loaded: Loaded[RoleRecipe], paths: RolePaths, train: dict[str, Any],
            merge: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """LLaMA-Factory's parser on both configs, twice each. First the values as command-line flags:
    HfArgumentParser converts and type-checks each one, which catches more (`lora_rank: abc`
    passes parse_dict and fails an hour later); what it resolves from them is kept (the merge's
    with the calibration sizes our GPTQ export reads). Then the rendered YAML file itself, loaded
    as llamafactory-cli loads it (OmegaConf, then parse_dict): what will run, quoting and
    rendering included."""
    recipe = loaded.recipe
    parser = import_parser()

    def train_args(source: dict[str, Any], tmp: str) -> dict[str, Any]:
        args = dict(source)
        args.pop("deepspeed", None)  # needs the package and FORCE_TORCHRUN; its JSON is checked apart
        args.pop("ray_num_workers", None)
        args["output_dir"] = tmp  # an empty dir: the parser looks for checkpoints in it
        args["use_cpu"] = True
        if args.get("bf16") or args.get("fp16"):
            args.pop("bf16", None)
            args.pop("fp16", None)
        return args

    problems = []
    values: dict[str, dict[str, Any]] = {"train": {}, "merge": {}}
    with tempfile.TemporaryDirectory() as tmp:
        complaint = parse_args(parser.get_train_args, train_args(train, tmp), resolved=values["train"])
        values["train"]["output_dir"] = train.get("output_dir")  # not the empty dir it was checked with
        if not complaint and paths.train_yaml.exists():
            complaint = parse_args(parser.get_train_args, train_args(read_rendered(paths.train_yaml), tmp),
                                   as_argv=False)
    if complaint:
        problems.append(blame(loaded, "train", complaint, recipe.train))
    calibration = {k: v for k, v in recipe.merge.items() if k in CALIBRATION_KEYS and v is not None}
    complaint = parse_args(parser.get_infer_args, {**merge, **calibration}, resolved=values["merge"])
    if not complaint and paths.merge_yaml.exists():
        complaint = parse_args(parser.get_infer_args, read_rendered(paths.merge_yaml), as_argv=False)
    if complaint and not any(complaint in p for p in problems):
        problems.append(blame(loaded, "merge", complaint, recipe.merge))
    return problems, values


# The calibration sizes of a quantized export: not in merge.yaml (core/llamafactory/gptq.py
# quantizes), resolved with it all the same.
CALIBRATION_KEYS = ("export_quantization_nsamples", "export_quantization_maxlen")
