"""The command line's side of a recipe: `--set dotted.key=value` parsed (split on the first `=`,
the value read as a YAML scalar) and applied, routed to the role or the pipeline recipe by its
top-level key, and the make variables a value came from (`data.train = ... (from TRAIN)`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml

from orchestrator.core.common.errors import UserError, did_you_mean
from orchestrator.core.common.process import environ_set
from orchestrator.core.project.state import from_state
from orchestrator.core.recipes.reading import check_tree, load_yaml, shown
from orchestrator.core.recipes.schema import PipelineRecipe, RoleRecipe


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", value); the value parsed as a YAML scalar. Split on the first `=`."""
    if "=" not in item:
        raise UserError(f"--set {shown(item)}: expected KEY=VALUE, e.g. --set train.learning_rate=5e-5")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"--set {shown(item)}: the key before '=' must be a dotted name such as train.learning_rate")
    try:
        value = load_yaml(text) if text.strip() else ""
    except (yaml.YAMLError, RecursionError):  # not YAML: the text as typed
        value = text
    check_tree(value, f"--set {shown(key)}")
    return key, value


MAKE_VARIABLES_ENV = "ORCHESTRATOR_MAKE_VARIABLES"  # "data.train=TRAIN ...": the --set items make passes


def make_variables() -> dict[str, str]:
    """dotted key -> the make variable whose value make passed as `--set KEY=...`, so the value's
    origin reads `TRAIN` rather than `--set`; `TRAIN@last` (a value make kept from its last call)
    reads `TRAIN in the last make call`."""
    out = {}
    for item in os.environ.get(MAKE_VARIABLES_ENV, "").split():
        key, _, name = item.partition("=")
        name, _, tag = name.partition("@")
        if key and name.isidentifier():
            out[key] = f"{name} in the last make call" if tag == "last" else name
    return out


@contextmanager
def naming_make_variables(names: dict[str, str]) -> Iterator[None]:
    """Every command in this process (and its children) reads `names` (dotted key -> the make
    variable it came from) as make_variables(); the variable as it was, after."""
    with environ_set(MAKE_VARIABLES_ENV, " ".join(f"{key}={name}" for key, name in names.items())):
        yield


def from_command_line(source: str) -> bool:
    """A value the command line or the project state set (not a recipe file)."""
    return source.startswith("--") or source in make_variables().values() or from_state(source)


def mark_origin(value: Any, origin: dict[str, str], source: str, prefix: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            origin[f"{prefix}{k}"] = source
            mark_origin(v, origin, source, f"{prefix}{k}.")


def apply_override(data: dict[str, Any], key: str, value: Any, origin: dict[str, str], source: str = "--set") -> None:
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
            origin[".".join(parts[: i + 1])] = source  # a section the override created
        elif not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            raise UserError(f"{source} {shown(key)}: {shown(prefix)} is a value, not a section")
        node = child
    node[parts[-1]] = value
    origin[key] = source
    mark_origin(value, origin, source, key + ".")


def route_overrides(
    overrides: tuple[str, ...] | list[str], *, role: bool = True, pipeline: bool = True
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split `--set` items by top-level key into (role recipe items, pipeline recipe items),
    for a command that reads a role recipe, a pipeline recipe, or both."""
    sections = {
        **({k: "role" for k in RoleRecipe.model_fields} if role else {}),
        **({k: "pipeline" for k in PipelineRecipe.model_fields} if pipeline else {}),
    }
    routed: dict[str, list[str]] = {"role": [], "pipeline": []}
    for item in overrides:
        key, _ = parse_override(item)
        top = key.split(".")[0]
        if top not in sections:
            other = {*RoleRecipe.model_fields, *PipelineRecipe.model_fields} - set(sections)
            elsewhere = " (a key of the other kind of recipe, which this command does not read)" if top in other else ""
            raise UserError(
                f"--set {shown(item)}: {shown(top)} is not a recipe key{elsewhere}; "
                f"valid keys start with {', '.join(sorted(sections))}{did_you_mean(top, sections)}"
            )
        routed[sections[top]].append(item)
    return tuple(routed["role"]), tuple(routed["pipeline"])

