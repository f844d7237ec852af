"""A recipe file read safely: its size bounded, a YAML error one line with its line number, and
what YAML aliases can build (a structure that contains itself, a billion-laughs bomb) refused
before anything copies, merges or prints it. `--set` values pass the same check."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import HOME_ENV, display, found_project

MAX_RECIPE_BYTES = 1 << 20  # recipes are a few KB; more is a mistake, and slow to parse
MAX_VALUES = 100_000  # values in a recipe with its aliases expanded (a billion-laughs bomb has 10^9)
MAX_DEPTH = 50


class _Loader(yaml.SafeLoader):
    """YAML as LLaMA-Factory reads it (OmegaConf): `5e-5` is a number, as in YAML 1.2, where PyYAML
    alone reads text; so `--set train.learning_rate=5e-3` and `=0.005` are one value, one model."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """yaml.safe_load, with a number in exponent form (`5e-5`) read as a number."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader


def load_yaml_file(path: Path, what: str = "recipe", missing: str = "") -> Any:
    """A YAML file parsed (None when empty); every way it can be unreadable is one UserError
    naming it (`what` it was meant to be, and `missing`: the hint for a file not there)."""
    name = display(path)
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise UserError(f"{name}: {path.stat().st_size} bytes is too large for a {what} (at most {MAX_RECIPE_BYTES})")
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{name}: no such {what}{missing}") from None
    except (OSError, ValueError) as e:  # ValueError: not UTF-8, or a NUL byte in the path
        raise UserError(f"{name}: cannot read ({e})") from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark else name
        reason = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{where}: not valid YAML ({reason})") from None
    except RecursionError:
        raise UserError(f"{name}: not valid YAML (nested too deeply)") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """One recipe file as a mapping (empty for an empty file); every way it can be unreadable
    is one UserError naming it."""
    data = load_yaml_file(path, "recipe", _where_recipes_are(path) if not path.exists() else "")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{display(path)}: a recipe is a mapping of keys, not a {type(data).__name__}")
    check_tree(data, display(path))
    return data


def _where_recipes_are(missing: Path) -> str:
    """The hint for a recipe not there: the recipes its folder holds, or that no project was found."""
    if not os.environ.get(HOME_ENV) and found_project() is None:
        return f" (no project found from {Path.cwd()} up: run from the project folder or set {HOME_ENV}=/path/to/project)"
    try:
        names = sorted(f.name for f in missing.parent.iterdir() if f.suffix in (".yaml", ".yml"))
    except OSError:
        return ""
    return f" ({display(missing.parent)}/ holds {', '.join(names)})" if names else ""


def check_tree(value: Any, where: str) -> None:
    """Refuse what YAML aliases can build: a structure that contains itself, or one that
    expands to more than MAX_VALUES values (each later copy, merge and print would hang)."""
    count = 0

    def walk(v: Any, depth: int, path: tuple[int, ...]) -> None:
        nonlocal count
        count += 1
        if count > MAX_VALUES:
            raise UserError(f"{where}: aliases expand it beyond {MAX_VALUES} values; write the values out")
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(f"{where}: text has an unpaired \\uXXXX surrogate escape") from None
        if not isinstance(v, (dict, list)):
            return
        if id(v) in path:
            raise UserError(f"{where}: an alias refers to itself (a structure cannot contain itself)")
        if depth > MAX_DEPTH:
            raise UserError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        for child in ([*v.keys(), *v.values()] if isinstance(v, dict) else v):
            walk(child, depth + 1, (*path, id(v)))

    walk(value, 0, ())


def shown(text: str) -> str:
    """User text in an error line: as typed, or quoted when it holds a newline or the like."""
    return text if text.isprintable() else repr(text)
