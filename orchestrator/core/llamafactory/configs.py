"""The contract with LLaMA-Factory: render a role recipe into its train and merge YAMLs and
`dataset_info.json`, and check them with LLaMA-Factory's own argument parser."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from orchestrator.core.common.errors import UserError, did_you_mean
from orchestrator.core.common.files import atomic_write_json, atomic_write_text
from orchestrator.core.common.paths import datasets_dir, inside, project_root, runs_dir
from orchestrator.core.common.render import render
from orchestrator.core.llamafactory.launch import missing_extras
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import RoleRecipe

# Keys we fill in from the recipe's other sections, so train, merge and serve agree.
DERIVED = {
    "model_name_or_path": "model.path (or model.source)",
    "template": "model.template",
    "dataset": "dataset.name (and dataset.extra for more sets)",
    "eval_dataset": "dataset.val_size",
    "dataset_dir": "nothing: it is always the project's datasets/ folder",
    "output_dir": "name (the run folder runs/<name>/)",
    "deepspeed": "distributed.deepspeed",
    "adapter_name_or_path": "name (the adapter of runs/<name>/)",
    "export_dir": "name (the merged model goes to runs/<name>/merged/)",
    "export_quantization_dataset": "merge.export_quantization_bit (the calibration set is rendered)",
}

# LLaMA-Factory's example YAMLs group keys under these headers.
_METHOD = re.compile(r"^(stage|do_train|finetuning_type|lora_|lora$|use_(dora|rslora|pissa)|pissa_|loraplus_|quantization_|double_quantization|freeze_|oft_|additional_target|create_new_adapter|pref_|dpo_|kto_|simpo_|use_galore|galore_|use_apollo|apollo_|use_badam|badam_|rope_scaling|flash_attn|enable_liger|use_unsloth|train_mm_proj_only|freeze_vision)")
_DATASET = re.compile(r"^(cutoff_len|max_samples|overwrite_cache|preprocessing_num_workers|dataloader_num_workers|packing|neat_packing|train_on_prompt|mask_history|streaming|buffer_size|mix_strategy|interleave_probs|tokenized_path|tool_format|default_system|enable_thinking|media_dir)")
_OUTPUT = re.compile(r"^(logging_steps|save_steps|save_strategy|save_total_limit|save_only_model|plot_loss|overwrite_output_dir|report_to|run_name|logging_dir)")
_EVAL = re.compile(r"^(val_size|per_device_eval_batch_size|eval_strategy|eval_steps|do_eval|compute_accuracy|predict_with_generate|load_best_model_at_end|metric_for_best_model)")


@dataclass(frozen=True)
class RolePaths:
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


def model_path(recipe: RoleRecipe) -> Path:
    """The base model directory: model.path, else <models_dir>/<source>."""
    if recipe.model.path:
        return (project_root() / recipe.model.path).resolve()
    return (project_root() / recipe.model.models_dir / recipe.model.source).resolve()


# What LLaMA-Factory needs installed to load a pre-quantized base, by the quant_method of its
# config.json (model/model_utils/quantization.py: configure_quantization, check_version mandatory).
QUANTIZED_REQUIRES = {"gptq": "gptqmodel>=2.0.0", "awq": "autoawq", "aqlm": "aqlm>=1.1.0"}
# LLaMA-Factory's refusal to merge into such a base (train/tuner.py: export_model).
CANNOT_MERGE = "Cannot merge adapters to a quantized model."
_QUANTIZED_NAME = re.compile(r"(?i)(?<![a-z])(gptq|awq|aqlm)(?![a-z])")


def base_quantization(recipe: RoleRecipe, *, by_name: bool = True) -> str | None:
    """The quantization the base model's config.json declares (its quant_method, e.g. gptq);
    None when it declares none. Reads one file: no model, no GPU. A base not downloaded yet is
    judged by its name (`Qwen2.5-32B-Instruct-GPTQ-Int4` is gptq) unless `by_name` is False, so
    make plans the same targets before and after the download."""
    try:
        config = json.loads((model_path(recipe) / "config.json").read_text(encoding="utf-8"))
    except OSError:
        named = by_name and _QUANTIZED_NAME.search(recipe.model.path or recipe.model.source or "")
        return named.group(1).lower() if named else None
    except ValueError:
        return None
    quantization = config.get("quantization_config") if isinstance(config, dict) else None
    if not quantization:
        return None
    method = quantization.get("quant_method") if isinstance(quantization, dict) else None
    return str(method or "unknown").lower()


def served_weights(recipe: RoleRecipe) -> str:
    """What serving the role loads: `merged` (runs/<name>/merged/) or `adapter` (the base with
    runs/<name>/adapter/ on top). serve.weights auto: the adapter on a quantized base."""
    if recipe.serve.weights != "auto":
        return recipe.serve.weights
    return "adapter" if base_quantization(recipe) else "merged"


def _model_key(recipe: RoleRecipe) -> str:
    return "model.path" if recipe.model.path else "model.source"


def quantization_problems(loaded: Loaded[RoleRecipe]) -> list[str]:
    """A quantized base asked to be merged, or missing the package LLaMA-Factory loads it with."""
    recipe = loaded.recipe
    method = base_quantization(recipe)
    base = model_path(recipe)
    problems = []
    bits = recipe.merge.get("export_quantization_bit")
    if bits is not None and bits not in EXPORT_BITS:
        problems.append(f"{loaded.where('merge.export_quantization_bit')}: merge.export_quantization_bit {bits!r}: "
                        f"LLaMA-Factory's GPTQ export takes {', '.join(map(str, EXPORT_BITS))}")
    if method is None:
        return problems
    if recipe.serve.weights == "merged":
        problems.append(f"{loaded.where('serve.weights')}: serve.weights merged: LLaMA-Factory says: {CANNOT_MERGE} "
                        f"({base} is {method.upper()}-quantized); set serve.weights: adapter (or auto) to serve "
                        "the base with the adapter on top")
    # the package it loads with matters once the base is here (its config.json says which)
    requirement = QUANTIZED_REQUIRES.get(base_quantization(recipe, by_name=False) or "")
    if requirement:
        import_parser()  # its quiet logging first
        from llamafactory.extras.misc import check_version

        try:
            check_version(requirement, mandatory=True)
        except ImportError as e:
            message = str(e.args[0] if e.args else e)  # PackageNotFoundError's str() prefixes its own words
            said = " ".join(line.strip() for line in message.splitlines() if line.strip())
            key = _model_key(recipe)
            how = " (`make setup-quant` installs it)" if requirement.startswith("gptqmodel") else ""
            problems.append(f"{loaded.where(key)}: {key}: {base} is {method.upper()}-quantized (its config.json); "
                            f"LLaMA-Factory needs {requirement} to load it{how}: {said}")
    return problems


def _refuse_derived(loaded: Loaded[RoleRecipe], section: str, args: dict[str, Any]) -> list[str]:
    problems = []
    for key in args:
        if key in DERIVED and args[key] is not None:
            dotted = f"{section}.{key}"
            problems.append(f"{loaded.where(dotted)}: {dotted} is filled in by the orchestrator; set {DERIVED[key]} instead")
    return problems


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
    groups = _group(recipe.train)
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


# merge.export_quantization_* keys: LLaMA-Factory quantizes no adapter ("Please merge adapters
# before quantizing the model."), so merge.yaml merges and the merged model is quantized apart (core/llamafactory/gptq.py).
QUANTIZE_KEYS = ("export_quantization_bit", "export_quantization_nsamples", "export_quantization_maxlen")
EXPORT_BITS = (2, 3, 4, 8)  # what LLaMA-Factory's GPTQ export accepts


def merge_sections(recipe: RoleRecipe, paths: RolePaths) -> dict[str, dict[str, Any]]:
    export = {"export_dir": str(paths.merged)}
    export.update({k: v for k, v in recipe.merge.items() if v is not None and k not in QUANTIZE_KEYS})
    return {
        "model": {
            "model_name_or_path": str(model_path(recipe)),
            "adapter_name_or_path": str(paths.adapter),
            "template": recipe.model.template,
            "finetuning_type": recipe.train.get("finetuning_type") or "lora",
            "trust_remote_code": True,
        },
        "export": export,
    }


def flat(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {k: v for keys in sections.values() for k, v in keys.items()}


def deepspeed_config(recipe: RoleRecipe) -> dict[str, Any]:
    """LLaMA-Factory's ZeRO-2/3 config (examples/deepspeed), from the template."""
    ds = recipe.distributed
    return json.loads(render("llamafactory/deepspeed.json.j2", stage=ds.deepspeed, offload=ds.offload))


def calibration_texts(questions: list, maxlen: int) -> list[dict[str, str]]:
    """Calibration samples for GPTQ export: Answer prompts joined until each is longer than
    `maxlen` tokens (LLaMA-Factory only takes samples longer than that)."""
    from orchestrator.core.data.prompts import answer_prompt

    chars = 4 * maxlen  # Qwen2's tokenizer packs well under 4 characters of this text per token
    texts, current = [], ""
    for q in questions:
        current += answer_prompt(q) + "\n"
        if len(current) > chars:
            texts.append({"text": current})
            current = ""
    if current:
        texts.append({"text": current * (chars // len(current) + 1)})
    return texts


def render_role(loaded: Loaded[RoleRecipe]) -> RolePaths:
    """Write runs/<name>/train.yaml and merge.yaml (and the DeepSpeed JSON) for a role."""
    recipe = loaded.recipe
    problems = _refuse_derived(loaded, "train", recipe.train) + _refuse_derived(loaded, "merge", recipe.merge)
    if problems:
        raise UserError(*problems)
    paths = role_paths(recipe)
    header = f"generated by `orchestrator render {recipe.role}` from {loaded.where('role')}; edit the recipe, not this file"
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
    from orchestrator.core.data.mixed_datasets import ALPACA_COLUMNS, mixed_entries

    entries = {}
    for recipe in recipes:
        for name, file_name in dataset_entries(recipe).items():
            entries[name] = {"file_name": file_name, "formatting": "alpaca", "columns": ALPACA_COLUMNS}
        entries.update(mixed_entries(recipe))
    ours = json.loads(render("llamafactory/dataset_info.json.j2", entries=entries))
    atomic_write_json(path, {**existing, **ours})
    return path


# ---------------------------------------------------------------- checking with LLaMA-Factory


@contextmanager
def gpus_hidden() -> Iterator[None]:
    """Hide the GPUs while LLaMA-Factory's parser runs, so validation does not depend on this
    machine's GPUs; the subprocesses started afterwards see them again."""
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


def import_parser():
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "ERROR")
    import transformers

    transformers.logging.set_verbosity_error()
    from llamafactory.hparams import parser

    return parser


def known_arguments(kind: str) -> set[str]:
    parser = import_parser()
    classes = [*parser._TRAIN_ARGS, parser.RayArguments] if kind == "train" else parser._INFER_ARGS
    import dataclasses

    return {f.name for cls in classes for f in dataclasses.fields(cls)}


def _as_argv(args: dict[str, Any]) -> list[str]:
    """A mapping as command-line flags, so HfArgumentParser converts and type-checks each value
    exactly as `llamafactory-cli` does with a YAML file."""
    argv = []
    for key, value in args.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, (dict, list)):
            value = json.dumps(value) if isinstance(value, dict) else ",".join(map(str, value))
        argv += [f"--{key}", str(value)]
    return argv


def read_rendered(path: Path) -> dict[str, Any]:
    """A rendered YAML as `llamafactory-cli train|export FILE` reads it (parser.read_args)."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(path.absolute()))
    if not isinstance(data, dict):
        raise UserError(f"{path}: rendered as a {type(data).__name__}, not a mapping (a template bug)")
    return {str(k): v for k, v in data.items()}


def parse_args(parse_fn, args: dict[str, Any], *, as_argv: bool = True) -> str | None:
    """Run one of LLaMA-Factory's parsers; its complaint, or None. as_argv: hand it command-line
    flags (HfArgumentParser converts and type-checks each value); else the mapping itself,
    as `llamafactory-cli` does with a YAML file (parse_dict: no conversion)."""
    import contextlib
    import io

    err = io.StringIO()
    try:
        with gpus_hidden(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parse_fn(_as_argv(args) if as_argv else args)
    except SystemExit:
        lines = [line for line in err.getvalue().splitlines() if "error:" in line]
        return lines[-1].split("error:", 1)[1].strip() if lines else err.getvalue().strip()[-300:]
    except (ValueError, ImportError, RuntimeError, TypeError) as e:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return None


def blame(loaded: Loaded[RoleRecipe], section: str, message: str, args: dict[str, Any]) -> str:
    """Name the recipe key a LLaMA-Factory complaint is about, when it names one."""
    for word in re.findall(r"[`'\-]{1,2}([a-z_][a-z0-9_]+)", message):
        if word in args:
            dotted = f"{section}.{word}"
            return f"{loaded.where(dotted)}: {dotted}: LLaMA-Factory says: {message}"
    return f"{loaded.where(section)}: {section}: LLaMA-Factory says: {message}"


def check_role(loaded: Loaded[RoleRecipe], paths: RolePaths) -> list[str]:
    """Problems LLaMA-Factory's parser finds in the rendered train and merge configs."""
    recipe = loaded.recipe
    parser = import_parser()
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
    problems += missing_extras(loaded)
    if problems:
        return problems

    # Two passes over each config. First the values as command-line flags: HfArgumentParser
    # converts and type-checks each one, which catches more (`lora_rank: abc` passes parse_dict
    # and fails an hour later). Then the rendered YAML file itself, loaded as llamafactory-cli
    # loads it (OmegaConf, then parse_dict): what will run, quoting and rendering included.
    def train_args(source: dict[str, Any], tmp: str) -> dict[str, Any]:
        train = dict(source)
        train.pop("deepspeed", None)  # needs the package and FORCE_TORCHRUN; its JSON is checked apart
        train.pop("ray_num_workers", None)
        train["output_dir"] = tmp  # an empty dir: the parser looks for checkpoints in it
        train["use_cpu"] = True
        if train.get("bf16") or train.get("fp16"):
            train.pop("bf16", None)
            train.pop("fp16", None)
        return train

    with tempfile.TemporaryDirectory() as tmp:
        complaint = parse_args(parser.get_train_args, train_args(flat(train_sections(recipe, paths)), tmp))
        if not complaint and paths.train_yaml.exists():
            complaint = parse_args(parser.get_train_args, train_args(read_rendered(paths.train_yaml), tmp),
                                   as_argv=False)
    if complaint:
        problems.append(blame(loaded, "train", complaint, recipe.train))
    complaint = parse_args(parser.get_infer_args, flat(merge_sections(recipe, paths)))
    if not complaint and paths.merge_yaml.exists():
        complaint = parse_args(parser.get_infer_args, read_rendered(paths.merge_yaml), as_argv=False)
    if complaint and not any(complaint in p for p in problems):
        problems.append(blame(loaded, "merge", complaint, recipe.merge))

    info_path = datasets_dir() / "dataset_info.json"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    for name in [*dataset_entries(recipe), *recipe.dataset.extra]:
        if name not in info:
            problems.append(f"{info_path}: dataset {name} is not defined (run `orchestrator render {recipe.role}`)")
    return problems + quantization_problems(loaded)


def cli_path() -> str:
    """`llamafactory-cli` of this Python environment."""
    beside = Path(sys.executable).parent / "llamafactory-cli"
    if beside.exists():
        return str(beside)
    found = shutil.which("llamafactory-cli")
    if not found:
        raise UserError("llamafactory-cli is not installed in this environment: run `make setup`")
    return found
