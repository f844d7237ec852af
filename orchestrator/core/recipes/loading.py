"""Recipes: YAML the user edits, loaded once into typed objects (the schema is recipes.schema).

Precedence: parent recipe (`extends:`), then the recipe, then `--set dotted.key=value`.
Every problem is reported at once, each with the file (or `--set`) and the dotted key;
a null value removes a key a parent set.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic

from pydantic import BaseModel, ValidationError

from orchestrator.core.common.errors import UserError, did_you_mean
from orchestrator.core.common.paths import display, project_root, runs_dir
from orchestrator.core.common.progress import say
from orchestrator.core.project.identity import flatten, value_hash
from orchestrator.core.project.state import kept_recipe, kept_settings
from orchestrator.core.recipes.overrides import (
    apply_override,
    from_command_line,
    make_variables,
    mark_origin,
    parse_override,
)
from orchestrator.core.recipes.reading import read_yaml, shown
from orchestrator.core.recipes.schema import ROLES, PipelineRecipe, R, RoleRecipe


@dataclass
class Loaded(Generic[R]):
    """A validated recipe with where it came from."""

    recipe: R
    path: Path
    raw: dict[str, Any]  # the merged mapping, for printing and manifests
    origin: dict[str, str] = field(default_factory=dict)  # dotted key -> file, "--set" or "--some-flag"

    def overridden(self) -> dict[str, dict[str, Any]]:
        """The values the command line set (--set, flags, make variables): dotted key -> value and origin."""
        out = {}
        for dotted, source in self.origin.items():
            if from_command_line(source) and not any(self.origin.get(p) == source for p in _parents(dotted)):
                out[dotted] = {"value": _get(self.raw, dotted), "from": source}
        return out

    def overridden_lines(self) -> list[str]:
        """`key = value  (from --flag)` for each value the command line set, to print at start;
        data paths are left to `data_line`, which every command reading one prints."""
        return [f"{k} = {v['value']!r}  (from {v['from']})" for k, v in self.overridden().items()
                if not k.startswith("data.")]

    def files(self) -> list[Path]:
        """The recipe files its values came from: the recipe and every parent it extends."""
        named = {Path(source) for source in self.origin.values()} | {self.path}
        return sorted(f for f in {p if p.is_absolute() else project_root() / p for p in named} if f.is_file())

    def data_line(self, dotted: str) -> str:
        """`data.train = FILE (from WHERE)`: the data file a command reads and who chose it."""
        return f"{dotted} = {_get(self.recipe.model_dump(), dotted)} (from {self.where(dotted)})"

    def data_file(self, dotted: str) -> Path:
        """The file a data key names (relative to the project), which must exist."""
        path = project_root() / str(_get(self.recipe.model_dump(), dotted))
        if not path.is_file():
            raise UserError(f"{self.data_line(dotted)}: no such file (looked for {path})")
        return path

    def where(self, dotted: str) -> str:
        """The file (or --set, or the flag) that set `dotted` or its closest parent."""
        return _where(self.origin, self.path, dotted)


def _where(origin: dict[str, str], path: Path, dotted: str) -> str:
    parts = dotted.split(".")
    while parts:
        key = ".".join(parts)
        if key in origin:
            return origin[key]
        parts.pop()
    return display(path)


def _parents(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _get(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


# ---------------------------------------------------------------- loading


def _merge(base: dict, top: dict, origin: dict[str, str], source: str, prefix: str = "") -> dict:
    out = dict(base)
    for key, value in top.items():
        key = str(key)
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, origin, source, dotted + ".")
        else:
            out[key] = copy.deepcopy(value)
            origin[dotted] = source
            mark_origin(value, origin, source, dotted + ".")
    return out


def _load_chain(path: Path, origin: dict[str, str], seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    try:
        resolved = path.resolve()
    except (OSError, ValueError) as e:  # a NUL byte, a name too long
        raise UserError(f"{shown(str(path))}: not a usable path ({e})") from None
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise UserError(f"{display(path)}: extends itself ({chain})")
    data = read_yaml(path)
    parent_ref = data.pop("extends", None)
    base: dict[str, Any] = {}
    if parent_ref is not None:
        if not isinstance(parent_ref, str) or not parent_ref.strip():
            raise UserError(f"{display(path)}: extends must be the path of a parent recipe")
        try:
            parent = (path.parent / parent_ref).resolve()
            found = parent.exists()
        except (OSError, ValueError) as e:  # a NUL byte, a name too long
            raise UserError(f"{display(path)}: extends {shown(parent_ref)}, which is not a usable path ({e})") from None
        if not found:
            raise UserError(f"{display(path)}: extends {shown(parent_ref)}, which does not exist (looked for {parent})")
        base = _load_chain(parent, origin, (*seen, resolved))
    return _merge(base, data, origin, display(path))


def _describe(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"must be one of {expected}, got {_short(error.get('input'))}"
    msg = error["msg"].removeprefix("Value error, ")
    if kind in {"value_error"}:
        return msg
    return f"{msg[0].lower()}{msg[1:]}, got {_short(error.get('input'))}"


def _short(value: Any, limit: int = 60) -> str:
    """repr of a value, cut to keep an error on one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dotted(loc: tuple[Any, ...]) -> str:
    """A location as a dotted key; a part that is not a plain word is shown quoted."""
    return ".".join(str(p) if re.fullmatch(r"[\w\[\]-]+", str(p)) else repr(str(p)) for p in loc)


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the section that `loc` points into."""
    for part in loc:
        info = model.model_fields.get(str(part))
        ann = getattr(info, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return list(model.model_fields)


def validate(cls: type[R], data: dict[str, Any], path: Path, origin: dict[str, str]) -> R:
    """Validate into `cls`; every problem becomes one line naming the file and dotted key."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = tuple(err["loc"])
            where, dotted = _where(origin, path, ".".join(str(p) for p in loc)), _dotted(loc)
            if err["type"] == "extra_forbidden":
                hint = did_you_mean(str(loc[-1]), _fields_at(cls, loc[:-1]))
                lines.append(f"{where}: {dotted} is not a recipe key{hint}")
            else:
                lines.append(f"{where}: {dotted} {_describe(err)}")
        raise UserError(*lines) from None


def load(
    path: str | Path,
    cls: type[R],
    overrides: tuple[str, ...] | list[str] = (),
) -> Loaded[R]:
    path = Path(path)
    origin: dict[str, str] = {}
    data = _load_chain(path, origin)
    if cls is PipelineRecipe:  # the project state, between the recipe and the command line
        for key, (value, source) in kept_settings().items():
            apply_override(data, key, value, origin, source=source)
    by_make = make_variables()
    as_read = copy.deepcopy(data)
    for item in overrides:
        key, value = parse_override(item)
        apply_override(data, key, value, origin, source=by_make.get(key, "--set"))
    _refuse_other_kind(cls, data, path)
    if cls is RoleRecipe:
        variant_names(as_read, data, origin)
    recipe = validate(cls, data, path, origin)
    return Loaded(recipe, path, data, origin)


# what a role's model is made of: a --set of one of these keys is a variant with its own run folder
MADE_OF = ("model", "dataset", "fewshot", "train", "merge", "distributed")
DATASET_MADE_OF = ("dataset", "fewshot", "model.template")  # and so with its own dataset
# where this machine is in a cluster, not what the model is made of: every node one run folder
WHERE_NOT_WHAT = ("distributed.node_rank", "distributed.master_addr", "distributed.master_port")


def variant_names(as_read: dict[str, Any], data: dict[str, Any], origin: dict[str, str]) -> None:
    """A --set that changes what the model is made of (train.learning_rate, model.path...) names a
    variant: its run folder is runs/<name>@<hash of the changed values>/ and, when it changes the
    training set, its dataset <dataset>.<hash>, so it never trains or builds over the recipe's own
    (runs/<name>/ always holds the model of the recipe as it reads). `name=` or `dataset.name=`
    given on the command line is taken as it is."""
    before, after = flatten({k: as_read.get(k) for k in MADE_OF}), flatten({k: data.get(k) for k in MADE_OF})
    changed = {str(key): after.get(key) for key in sorted(set(before) | set(after), key=str)
               if before.get(key) != after.get(key) and key not in WHERE_NOT_WHAT}
    if not changed:
        return
    if "name" not in origin or not from_command_line(origin["name"]):
        name = data.get("name") or data.get("role")
        if isinstance(name, str):
            data["name"] = f"{name}@{variant_hash(changed)}"
    # (dataset.extra lists other files beside the built set: the built set is the recipe's own)
    dataset_changed = {k: v for k, v in changed.items()
                       if k.startswith(DATASET_MADE_OF) and k != "dataset.name" and not k.startswith("dataset.extra")}
    dataset: dict[str, Any] = data["dataset"] if isinstance(data.get("dataset"), dict) else {}
    if dataset_changed and not ("dataset.name" in origin and from_command_line(origin["dataset.name"])):
        own = dataset.get("name") or f"train_{data.get('role')}_instruct"
        data["dataset"] = {**dataset, "name": f"{own}.{variant_hash(dataset_changed)}"}


def variant_hash(changed: dict[str, Any]) -> str:
    """The name of a variant: a short hash of the dotted keys it changes and their new values (a
    run folder's `@<hash>`, a built set's `.<hash>`, an infer or eval folder's `@<hash>`)."""
    return value_hash(sorted((k, repr(v)) for k, v in changed.items()))[:8]


def changed_by(before: dict[str, Any], after: dict[str, Any], keys: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The dotted leaves under `keys` (--set keys as given) whose value `after` differs from `before`."""
    old, new = flatten(before), flatten(after)
    return {k: new.get(k) for k in sorted(set(old) | set(new))
            if any(k == key or k.startswith(key + ".") for key in keys) and old.get(k) != new.get(k)}


def _refuse_other_kind(cls: type[RoleRecipe] | type[PipelineRecipe], data: dict[str, Any], path: Path) -> None:
    """A role recipe given where a pipeline recipe belongs (or the reverse): say so, once."""
    if cls is PipelineRecipe and "role" in data:
        raise UserError(f"{display(path)} is a role recipe (it has role:); this command takes a pipeline recipe such as recipes/pipeline.yaml")
    if cls is RoleRecipe and "role" not in data and {"teacher", "inference", "data"} & set(data):
        raise UserError(f"{display(path)} is a pipeline recipe; this command takes a role recipe such as recipes/answer.yaml")


def default_role_recipe(role: str, variant: str | None = None) -> Path:
    """recipes/<role>.yaml, or recipes/<variant>-<role>.yaml (`RECIPE=tiny`)."""
    return project_root() / "recipes" / (f"{variant}-{role}.yaml" if variant else f"{role}.yaml")


_SAID: set[str] = set()  # what a process said of the kept recipes: once each


def _kept_or(role: str | None, default: Path) -> Path:
    """The recipe the project state names for `role` (None: the pipeline), said once; else `default`."""
    kept = kept_recipe(role)
    if kept is None:
        return default
    path, chosen = kept
    line = f"{'pipeline' if role is None else role} recipe {display(path)} (from {chosen})"
    if line not in _SAID:
        _SAID.add(line)
        say("recipes", line)
    return path


def load_role(
    role: str, recipe: str | Path | None = None, overrides: tuple[str, ...] | list[str] = ()
) -> Loaded[RoleRecipe]:
    """Load a role recipe and check it is for `role`."""
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}: choose answer or evaluate{did_you_mean(role, ROLES)}")
    run = named_run(recipe) if recipe else None
    if run is not None:  # an experiment of `orchestrator runs`: the recipe its training recorded
        raw, path = run
        origin = {"name": f"the experiment {recipe}"}
        data = copy.deepcopy(raw)
        for item in overrides:
            key, value = parse_override(item)
            apply_override(data, key, value, origin)
        loaded = Loaded(validate(RoleRecipe, data, path, origin), path, data, origin)
    else:
        loaded = load(recipe or _kept_or(role, default_role_recipe(role)), RoleRecipe, overrides)
    if loaded.recipe.role != role:
        raise UserError(
            f"{loaded.where('role')}: role is {loaded.recipe.role}, but this command is for the {role} model"
        )
    return loaded


def named_run(name: str | Path) -> tuple[dict[str, Any], Path] | None:
    """A name of `orchestrator runs` given where a recipe file goes: tiny-answer@1a2b3c4d (a run
    folder) or tiny-answer~5e6f7a8b (a kept training, by its identity's first digits) -> the recipe
    its manifest recorded (named so: its run folder is runs/<name>/) and its recipe file."""
    path = Path(name)
    if path.is_absolute():  # (callers join a recipe to the project root)
        try:
            path = path.relative_to(project_root())
        except ValueError:
            return None
    text = str(path)
    if text.endswith((".yaml", ".yml")) or "/" in text or (project_root() / text).is_file():
        return None
    folder, _, ident = text.partition("~")
    run_dir = runs_dir() / folder
    found = sorted((run_dir / "kept").glob(f"{ident}*/manifest.json")) if ident else [run_dir / "manifest.json"]
    if not found or not found[0].is_file() or not re.fullmatch(r"[\w.@~-]+", text):
        return None
    try:
        manifest = json.loads(found[0].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    recipe = manifest.get("recipe") if isinstance(manifest, dict) else None
    if not isinstance(recipe, dict):
        return None
    source = Path(str(manifest.get("recipe_file") or text))
    return {**recipe, "name": text}, source if source.is_absolute() else project_root() / source


def command_for(loaded: Loaded[RoleRecipe], command: str) -> str:
    """`orchestrator COMMAND ROLE`, with `--recipe` when the recipe is not the role's default,
    so a hint followed literally acts on the same recipe."""
    role = loaded.recipe.role
    same = loaded.path.resolve() == default_role_recipe(role).resolve()
    return f"orchestrator {command} {role}" + ("" if same else f" --recipe {display(loaded.path)}")


def load_pipeline(
    recipe: str | Path | None = None, overrides: tuple[str, ...] | list[str] = ()
) -> Loaded[PipelineRecipe]:
    return load(recipe or _kept_or(None, project_root() / "recipes" / "pipeline.yaml"), PipelineRecipe, overrides)


# ---------------------------------------------------------------- the command line


def with_flags(loaded: Loaded[R], flags: dict[str, tuple[str, Any]]) -> Loaded[R]:
    """`loaded` with command-line options folded in: dotted key -> (flag, value); a None value
    is a flag not given. Each value is validated as it is (no round trip through text) and
    its origin is the flag, so an error names what the user typed."""
    given = {dotted: pair for dotted, pair in flags.items() if pair[1] is not None}
    if not given:
        return loaded
    data, origin = copy.deepcopy(loaded.raw), dict(loaded.origin)
    for dotted, (flag, value) in given.items():
        apply_override(data, dotted, value, origin, source=flag)
    recipe = validate(type(loaded.recipe), data, loaded.path, origin)
    return Loaded(recipe, loaded.path, data, origin)
