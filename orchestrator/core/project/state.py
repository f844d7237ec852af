"""The project state: what a make call (or `orchestrator run`) is given and keeps for the next one,
in one file a person can read and edit: .orchestrator/state.yaml at the project root.

    # .orchestrator/state.yaml
    RECIPE: tiny
    TRAIN: data/train.jsonl
    LIMIT: '3'

Every command reads it, typed by hand or run by `orchestrator run`, between the recipes and the
command line: RECIPE, ANSWER_RECIPE, EVALUATE_RECIPE and PIPELINE pick the recipes a command
reads when it is not given `--recipe`; TRAIN, TEST, GOLD and TEACHER_* are the pipeline recipe's
data.* and teacher.* values; LIMIT is the trial size of infer, eval (N) and distill (10×N). Each
command says which value it uses and where it came from (`from TRAIN in .orchestrator/state.yaml`).
`orchestrator run --ignore-state` (make demo) neither reads nor writes it; `make clean` removes it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_text
from orchestrator.core.common.paths import project_root
from orchestrator.core.common.process import environ_set

# the pipeline recipe's values a make variable sets
SETTINGS = {"TRAIN": "data.train", "TEST": "data.test", "GOLD": "data.gold", "TEACHER_URL": "teacher.base_url",
            "TEACHER_MODEL": "teacher.model", "TEACHER_KEY_ENV": "teacher.api_key_env"}
RECIPES = ("RECIPE", "ANSWER_RECIPE", "EVALUATE_RECIPE", "PIPELINE")
KEPT = (*RECIPES, *SETTINGS, "LIMIT")
DATA_FILES = ("TRAIN", "TEST", "GOLD")
CALL = ("OUT", "ROLE", "PORT")  # given to one call, never kept: where package and webui go
IGNORE_ENV = "ORCHESTRATOR_IGNORE_STATE"  # set: no command reads the state (make demo)
HEADER = ("# The project state: the values the last `make`/`orchestrator run` call was given, read by every\n"
          "# orchestrator command between the recipes and the command line (docs/make.md). Edit it, or give\n"
          "# NAME=VALUE to a make call (NAME= for the recipe's own); `make clean` removes it.\n")


def state_path() -> Path:
    return project_root() / ".orchestrator" / "state.yaml"


SHOWN = ".orchestrator/state.yaml"


def ignored() -> bool:
    return os.environ.get(IGNORE_ENV, "") not in ("", "0")


@contextmanager
def ignoring() -> Iterator[None]:
    """No command in this process (or its children) reads the state: make demo."""
    with environ_set(IGNORE_ENV, "1"):
        yield


_OVERLAY: list[dict[str, str]] = []  # `using`: the state of a dry run, never written


@contextmanager
def using(values: dict[str, str]) -> Iterator[None]:
    """Every command in this process reads `values` as the state (a dry run's, which it must not write)."""
    _OVERLAY.append(values)
    try:
        yield
    finally:
        _OVERLAY.pop()


def read_state() -> dict[str, str]:
    """The kept values (empty when there is no state, or it is ignored); a file that is not a
    mapping of these names is an Error naming it."""
    if ignored():
        return {}
    if _OVERLAY:
        return dict(_OVERLAY[-1])
    path = state_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise UserError(f"{SHOWN}: unreadable ({e.strerror}); fix or delete it (`make clean` does)") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{SHOWN}: not valid YAML ({str(e).splitlines()[0]}); fix or delete it") from None
    if not isinstance(data, dict):
        raise UserError(f"{SHOWN}: a mapping of NAME: value is expected (e.g. TRAIN: data/train.jsonl)")
    unknown = sorted(str(k) for k in data if k not in KEPT)
    if unknown:
        raise UserError(f"{SHOWN}: {', '.join(unknown)} is not one of {' '.join(KEPT)}")
    return {str(k): "" if v is None else str(v) for k, v in data.items() if v not in (None, "")}


def write_state(values: dict[str, str]) -> None:
    kept = {name: values[name] for name in KEPT if values.get(name)}
    atomic_write_text(state_path(), HEADER + (yaml.safe_dump(kept, allow_unicode=True, sort_keys=False) if kept else ""))


def origin(name: str) -> str:
    return f"{name} in {SHOWN}"


def from_state(source: str) -> bool:
    return source.endswith(f" in {SHOWN}")


def check_limit(value: str) -> str:
    if value and not (value.isdigit() and int(value) > 0):
        raise UserError(f"LIMIT={value}: a number of problems such as 3 (LIMIT= for all of them)")
    return value


def _is_file(recipe: str) -> bool:
    return recipe.endswith((".yaml", ".yml"))


def recipe_prefix(recipe: str) -> str:
    """RECIPE=<set> names recipes/<set>-answer.yaml, -evaluate.yaml and -pipeline.yaml (if there);
    RECIPE=<file>.yaml one Answer recipe (no prefix)."""
    if not recipe or _is_file(recipe):
        return ""
    if not re.fullmatch(r"\w[\w.-]*", recipe):
        raise UserError(f"RECIPE={recipe}: give a set of recipes such as tiny (recipes/tiny-answer.yaml, "
                        "tiny-evaluate.yaml, tiny-pipeline.yaml) or one Answer recipe such as recipes/tiny-answer-b.yaml")
    return recipe + "-"


@dataclass
class Settings:
    """The values in force for one call: those given over those kept."""

    values: dict[str, str]  # every KEPT and CALL name -> its value ("" for the recipe's own)
    given: set[str] = field(default_factory=set)  # the names this call gave
    from_last: list[str] = field(default_factory=list)  # kept names this call did not give
    dropped: list[str] = field(default_factory=list)  # NAME=VALUE a new PIPELINE dropped
    cleared: list[str] = field(default_factory=list)  # NAME=VALUE (as kept) this call gave empty
    unkept: list[str] = field(default_factory=list)  # NAME=VALUE of a data file that is not there
    ignored: bool = False  # make demo: nothing kept is read or written

    def origin(self, name: str) -> str:
        """Where a value in force comes from, as a command says it."""
        return name if name in self.given else origin(name)

    @property
    def prefix(self) -> str:
        return recipe_prefix(self.values["RECIPE"])

    def role_recipe(self, role: str) -> tuple[str, str]:
        """(the role's recipe file, what chose it)."""
        own, variable, recipe = self.values[f"{role.upper()}_RECIPE"], f"{role.upper()}_RECIPE", self.values["RECIPE"]
        if role == "answer" and _is_file(recipe):
            if own and own != recipe:
                raise UserError(f"RECIPE={recipe} and ANSWER_RECIPE={own} name two Answer recipes: give one")
            return recipe, self.origin("RECIPE")
        if own:
            return own, self.origin(variable)
        prefix = self.prefix
        return f"recipes/{prefix}{role}.yaml", (self.origin("RECIPE") if prefix else "the default")

    def pipeline(self) -> tuple[str, str]:
        if self.values["PIPELINE"]:
            return self.values["PIPELINE"], self.origin("PIPELINE")
        prefix = self.prefix
        if prefix and (project_root() / "recipes" / f"{prefix}pipeline.yaml").is_file():
            return f"recipes/{prefix}pipeline.yaml", self.origin("RECIPE")
        return "recipes/pipeline.yaml", "the default"

    def notes(self) -> list[str]:
        out = []
        if self.dropped:
            out.append(f"PIPELINE={self.values['PIPELINE']} names its own data and teacher: "
                       f"{' '.join(self.dropped)} kept before no longer apply")
        if self.cleared:
            out.append(f"{' '.join(n.partition('=')[0] + '=' for n in self.cleared)} given: the recipe's own value "
                       f"from now on (it was {' '.join(self.cleared)})")
        if self.unkept:
            out.append(f"{' '.join(self.unkept)}: no such file, so not kept for the next call")
        if self.from_last:
            shown = " ".join(f"{n}={self.values[n]}" for n in self.from_last)
            out.append(f"{shown} (kept in {SHOWN}; give NAME=VALUE to change one, NAME= for the recipe's own)")
        return out


def resolve(given: dict[str, str], ignore: bool = False) -> tuple[Settings, dict[str, str]]:
    """The values given over the kept ones, and the state to keep (as it was when unchanged).
    A new PIPELINE drops the kept data and teacher; a TRAIN, TEST or GOLD naming no file is used
    by this call but not kept; NAME= goes back to the recipe's own value."""
    unknown = sorted(set(given) - set(KEPT) - set(CALL))
    if unknown:
        raise UserError(f"{', '.join(unknown)}: not a setting; the settings are {' '.join(KEPT + CALL)}")
    check_limit(given.get("LIMIT", ""))
    kept = {} if ignore else read_state()
    result = Settings(values={}, given=set(given), ignored=ignore)
    if "PIPELINE" in given and given["PIPELINE"] != kept.get("PIPELINE", ""):
        result.dropped = [f"{n}={kept[n]}" for n in SETTINGS if kept.get(n) and n not in given]
        kept = {k: v for k, v in kept.items() if k not in SETTINGS}
    given_kept = {n: v for n, v in given.items() if n in KEPT}
    unkept = [n for n in DATA_FILES if given.get(n) and not (project_root() / given[n]).is_file()]
    now = {k: v for k, v in {**kept, **given_kept}.items() if v}
    stored = {k: v for k, v in {**kept, **{n: v for n, v in given_kept.items() if n not in unkept}}.items() if v}
    result.values = {n: now.get(n, "") for n in KEPT} | {n: given.get(n, "") for n in CALL}
    check_limit(result.values["LIMIT"])
    result.unkept = [f"{n}={given[n]}" for n in unkept]
    result.from_last = [n for n in KEPT if n not in given and now.get(n)]
    result.cleared = [f"{n}={kept[n]}" for n in KEPT if n in given and not given[n] and kept.get(n)]
    return result, stored


def kept_recipe(role: str | None) -> tuple[Path, str] | None:
    """The recipe a command reads when it is not given one, where the state names it: (the file,
    `RECIPE in .orchestrator/state.yaml`); None: the recipes' own default. `role` None: the pipeline."""
    kept = read_state()
    if not kept:
        return None
    settings, _ = resolve({}, ignore=False)
    path, chosen = settings.pipeline() if role is None else settings.role_recipe(role)
    return (project_root() / path, chosen) if from_state(chosen) else None


def kept_settings() -> dict[str, tuple[str, str]]:
    """The pipeline recipe's dotted keys the state sets -> (value, origin)."""
    kept = read_state()
    return {key: (kept[name], origin(name)) for name, key in SETTINGS.items() if kept.get(name)}


def kept_limit() -> tuple[int, str] | None:
    """LIMIT in the state: (N, its origin)."""
    value = check_limit(read_state().get("LIMIT", ""))
    return (int(value), origin("LIMIT")) if value else None
