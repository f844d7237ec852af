"""Quantization as LLaMA-Factory sees it: the quantization a base model declares (read from
its config.json, or its name before the download), what serving the role therefore loads
(`serve.weights auto`: the adapter on a quantized base, which nothing merges into), and the
recipe problems that follow (a merge asked of a quantized base, a missing package, export bits
LLaMA-Factory's GPTQ export does not take)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from orchestrator.core.llamafactory.parser import import_parser
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.role_paths import model_path

# What LLaMA-Factory needs installed to load a pre-quantized base, by the quant_method of its
# config.json (model/model_utils/quantization.py: configure_quantization, check_version mandatory).
QUANTIZED_REQUIRES = {"gptq": "gptqmodel>=2.0.0", "awq": "autoawq", "aqlm": "aqlm>=1.1.0"}
# LLaMA-Factory's refusal to merge into such a base (train/tuner.py: export_model).
CANNOT_MERGE = "Cannot merge adapters to a quantized model."
_QUANTIZED_NAME = re.compile(r"(?i)(?<![a-z])(gptq|awq|aqlm)(?![a-z])")
# merge.export_quantization_* keys: LLaMA-Factory quantizes no adapter ("Please merge adapters
# before quantizing the model."), so merge.yaml merges and the merged model is quantized apart
# (core/llamafactory/gptq.py).
QUANTIZE_KEYS = ("export_quantization_bit", "export_quantization_nsamples", "export_quantization_maxlen")
EXPORT_BITS = (2, 3, 4, 8)  # what LLaMA-Factory's GPTQ export accepts


def base_quantization(recipe: RoleRecipe, *, by_name: bool = True) -> str | None:
    """The quantization the base model's config.json declares (its quant_method, e.g. gptq);
    None when it declares none. Reads one file: no model, no GPU. A base not downloaded yet is
    judged by its name (`Qwen2.5-32B-Instruct-GPTQ-Int4` is gptq) unless `by_name` is False, so
    make plans the same targets before and after the download."""
    try:
        return config_quantization(model_path(recipe))
    except OSError:
        named = by_name and _QUANTIZED_NAME.search(recipe.model.path or recipe.model.source or "")
        return named.group(1).lower() if named else None


def config_quantization(model_dir: Path) -> str | None:
    """The quant_method a model folder's config.json declares (None: none, or unreadable JSON);
    OSError when there is no config.json to read."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
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

