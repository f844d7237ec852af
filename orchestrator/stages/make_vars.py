"""Stage: `make-vars`, what make needs before it plans: the data and teacher of this make call
and the files they name, written as a makefile fragment that the Makefile includes.

The project remembers its data: a variable given to a make call (even empty) is kept in
.make/kept.json, and a later call that omits it takes the kept value, said in one line. A new
PIPELINE drops the kept data and teacher (that recipe names its own).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_json, atomic_write_text
from orchestrator.core.common.paths import project_root
from orchestrator.core.recipes.loading import load_pipeline, load_role
from orchestrator.core.recipes.schema import DataSection

SETTINGS = {"TRAIN": "data.train", "TEST": "data.test", "GOLD": "data.gold", "TEACHER_URL": "teacher.base_url",
            "TEACHER_MODEL": "teacher.model", "TEACHER_KEY_ENV": "teacher.api_key_env"}
KEPT = ("PIPELINE", *SETTINGS, "LIMIT")


def kept_path() -> Path:
    return project_root() / ".make" / "kept.json"


@dataclass
class MakeVars:
    values: dict[str, str]  # every KEPT name -> the value in force ("" for the recipe's own)
    from_last: list[str] = field(default_factory=list)  # the names taken from the last make call
    dropped: list[str] = field(default_factory=list)  # kept values a new PIPELINE dropped
    cleared: list[str] = field(default_factory=list)  # kept values this call gave empty
    cleared_values: list[str] = field(default_factory=list)  # NAME=VALUE of those, as they were
    files: dict[str, list[str]] = field(default_factory=dict)  # make variable -> existing files
    infer_suffix: str = ""  # the infer folder's: "" for the shipped sample's test file, else -<its stem>

    def notes(self) -> list[str]:
        out = []
        if self.dropped:
            out.append(f"make: PIPELINE={self.values['PIPELINE']} names its own data and teacher: "
                       f"{' '.join(self.dropped)} of the last make call no longer apply")
        if self.cleared:
            out.append(f"make: {' '.join(n + '=' for n in self.cleared)} given: the recipe's own value from now on "
                       f"(it was {' '.join(self.cleared_values)})")
        if self.from_last:
            shown = " ".join(f"{n}={self.values[n]}" for n in self.from_last)
            out.append(f"make: {shown} (from the last make call; give NAME=VALUE to change one, "
                       f"NAME= for the recipe's own)")
        return out

    def fragment(self) -> str:
        lines = [f"override {n} := {_escaped(self.values[n])}" for n in KEPT]
        lines += [f"FROM_LAST := {' '.join(self.from_last)}", f"INFER_SUFFIX := {self.infer_suffix}"]
        lines += [f"{name} := {' '.join(_escaped(f) for f in files)}" for name, files in self.files.items()]
        return "\n".join(lines) + "\n"


def _escaped(value: str) -> str:
    return value.replace("$", "$$").replace("#", r"\#")


def _read_kept() -> dict[str, str]:
    try:
        kept = json.loads(kept_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in kept.items() if k in KEPT and isinstance(v, str)} if isinstance(kept, dict) else {}


def values_in_force(given: dict[str, str], ignore_kept: bool = False) -> MakeVars:
    """The given values over the kept ones; the kept file rewritten when they change
    (`ignore_kept`: the given values alone, nothing kept read or written)."""
    if ignore_kept:
        return MakeVars(values={n: given.get(n, "") for n in KEPT})
    kept = _read_kept()
    result = MakeVars(values={})
    if "PIPELINE" in given and given["PIPELINE"] != kept.get("PIPELINE", ""):
        result.dropped = [f"{n}={kept[n]}" for n in SETTINGS if kept.get(n) and n not in given]
        kept = {k: v for k, v in kept.items() if k not in SETTINGS}
    now = {**kept, **given}
    now = {k: v for k, v in now.items() if v}
    if now != kept:
        atomic_write_json(kept_path(), now)
    result.values = {n: now.get(n, "") for n in KEPT}
    result.from_last = [n for n in KEPT if n not in given and now.get(n)]
    result.cleared = [n for n in KEPT if n in given and not given[n] and kept.get(n)]
    result.cleared_values = [f"{n}={kept[n]}" for n in result.cleared]
    return result


def _shown(path: Path) -> str:
    root = project_root()
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _existing(files: list[str | None]) -> list[str]:
    """The files that exist, as make sees them from the project root (a missing one is left to
    the command that reads it, whose error names the key)."""
    root = project_root()
    return [_shown((root / f).resolve()) for f in dict.fromkeys(files) if f and (root / f).is_file()]


def data_files(result: MakeVars, default_pipeline: str, answer_recipe: str, evaluate_recipe: str) -> None:
    """The files each stage reads, from the recipes with the values in force; a recipe that does
    not load lists none (the stage's own command says why)."""
    sets = [f"{key}={result.values[name]}" for name, key in SETTINGS.items() if result.values[name]]
    result.files = {"PIPELINE_FILES": [], "TRAIN_FILES": [], "TEST_FILES": [], "GOLD_FILES": [],
                    "ANSWER_EXTRA": [], "EVALUATE_EXTRA": []}
    try:
        pipeline = load_pipeline(result.values["PIPELINE"] or default_pipeline, sets)
    except UserError:
        return
    data = pipeline.recipe.data
    if data.test != DataSection().test:
        result.infer_suffix = "-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", Path(data.test).stem) or "test")
    result.files["PIPELINE_FILES"] = [_shown(f) for f in pipeline.files()]
    result.files["TRAIN_FILES"] = _existing([data.train, data.fixes, *data.extra_train])
    result.files["TEST_FILES"] = _existing([data.test])
    result.files["GOLD_FILES"] = _existing([data.gold])
    for role, recipe in (("answer", answer_recipe), ("evaluate", evaluate_recipe)):
        try:
            extra = load_role(role, recipe).recipe.dataset.extra
        except UserError:
            continue
        result.files[f"{role.upper()}_EXTRA"] = _existing(list(extra.values()))


def make_vars(given: dict[str, str], out: Path, default_pipeline: str, answer_recipe: str,
              evaluate_recipe: str, ignore_kept: bool = False) -> MakeVars:
    unknown = sorted(set(given) - set(KEPT))
    if unknown:
        raise UserError(f"make-vars: {', '.join(unknown)} is not one of {' '.join(KEPT)}")
    result = values_in_force(given, ignore_kept)
    data_files(result, default_pipeline, answer_recipe, evaluate_recipe)
    atomic_write_text(out, result.fragment())
    return result
