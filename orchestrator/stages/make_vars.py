"""Stage: `make-vars`, all that make needs of the recipes before it plans, asked once per make
call and written as a makefile fragment that the Makefile includes (.make/vars.mk):

- the data and teacher of this make call and the files they name (make dependencies). The
  project remembers its data: a variable given to a make call (even empty) is kept in
  .make/kept.json, and a later call that omits it takes the kept value, said in one line (a
  TRAIN, TEST or GOLD naming no file is used, and refused by its stage, but not kept). A new
  PIPELINE drops the kept data and teacher (that recipe names its own);
- each role's recipe (RECIPE, ANSWER_RECIPE, EVALUATE_RECIPE) and the recipe files it is made of
  (it and every parent it extends: an edit of any makes its model stale), its run folder, its
  training set, and where its model ends (the adapter or the merged model);
- whether make stops before it builds anything: a recipe a model needs does not load, or
  `make eval` would be refused once the models are trained.

Every value a command gets is written quoted for the shell, and every file of a rule escaped for
make: a path with a space or a quote stays one argument, one file.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_json, atomic_write_text
from orchestrator.core.common.paths import project_root
from orchestrator.core.data.heldout import check_before_training
from orchestrator.core.llamafactory.quantization import served_weights
from orchestrator.core.recipes.loading import default_role_recipe, load_pipeline, load_role
from orchestrator.core.recipes.schema import DataSection
from orchestrator.core.serving.inference_models import resolve_models

SETTINGS = {"TRAIN": "data.train", "TEST": "data.test", "GOLD": "data.gold", "TEACHER_URL": "teacher.base_url",
            "TEACHER_MODEL": "teacher.model", "TEACHER_KEY_ENV": "teacher.api_key_env"}
KEPT = ("PIPELINE", *SETTINGS, "LIMIT")
DATA_FILES = ("TRAIN", "TEST", "GOLD")
# given to every make call, never kept: the recipes, and where package and webui go
CALL = ("RECIPE", "ANSWER_RECIPE", "EVALUATE_RECIPE", "OUT", "ROLE", "PORT")
# .make/<name>: the values a stage reads, rewritten only when they change (make re-runs what reads them)
VALUE_FILES = {"train": ("TRAIN", "TEACHER_URL", "TEACHER_MODEL", "TEACHER_KEY_ENV", "DISTILL_LIMIT"),
               "test": ("TEST", "LIMIT"), "gold": ("GOLD",)}


def kept_path() -> Path:
    return project_root() / ".make" / "kept.json"


@dataclass
class Role:
    """What make needs of one role's recipe."""

    role: str
    recipe: str  # the file, as the commands get it
    named_by: str | None  # the make variable that named it; None: the one RECIPE implies
    files: list[str]  # the recipe and every parent it extends
    run: str  # runs/<name>
    dataset: str  # datasets/<dataset.name>.json
    weights: str  # what serving it loads: merged or adapter
    extra: list[str]  # its dataset.extra files that exist
    errors: list[str]  # its Error lines when it does not load (run, dataset and weights are then guesses)


@dataclass
class MakeVars:
    values: dict[str, str]  # every KEPT name -> the value in force ("" for the recipe's own)
    from_last: list[str] = field(default_factory=list)  # the names taken from the last make call
    dropped: list[str] = field(default_factory=list)  # kept values a new PIPELINE dropped
    cleared: list[str] = field(default_factory=list)  # kept values this call gave empty
    cleared_values: list[str] = field(default_factory=list)  # NAME=VALUE of those, as they were
    unkept: list[str] = field(default_factory=list)  # NAME=VALUE given for a data file that is not there
    files: dict[str, list[str]] = field(default_factory=dict)  # make variable -> existing files
    infer_suffix: str = ""  # the infer folder's: "" for the shipped sample's test file, else -<its stem>
    prefix: str = ""  # of the run folders infer, eval and image: "tiny-" for RECIPE=tiny
    pipeline: str = ""  # the pipeline recipe in force
    out: str = ""  # the folder make package writes
    webui: list[str] = field(default_factory=list)  # the arguments of `orchestrator webui`
    roles: dict[str, Role] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # Error lines to print: make stops
    stop: str = ""  # make's last line when it stops before planning

    def notes(self) -> list[str]:
        out = []
        if self.dropped:
            out.append(f"make: PIPELINE={self.values['PIPELINE']} names its own data and teacher: "
                       f"{' '.join(self.dropped)} of the last make call no longer apply")
        if self.cleared:
            out.append(f"make: {' '.join(n + '=' for n in self.cleared)} given: the recipe's own value from now on "
                       f"(it was {' '.join(self.cleared_values)})")
        if self.unkept:
            out.append(f"make: {' '.join(self.unkept)}: no such file, so not kept for the next make call")
        if self.from_last:
            shown = " ".join(f"{n}={self.values[n]}" for n in self.from_last)
            out.append(f"make: {shown} (from the last make call; give NAME=VALUE to change one, "
                       f"NAME= for the recipe's own)")
        return out

    def settings(self) -> list[tuple[str, str]]:
        """(make variable, dotted key) of the data and teacher values in force."""
        return [(name, key) for name, key in SETTINGS.items() if self.values[name]]

    def fragment(self) -> str:
        """The makefile fragment: each command argument quoted for the shell, each file of a rule
        escaped for make."""
        sets = [f"--set {_shell(key + '=' + self.values[name])}" for name, key in self.settings()]
        origins = [f"{key}={name}" + ("@last" if name in self.from_last else "") for name, key in self.settings()]
        lines = ["# written by `orchestrator make-vars` for one make call, which includes it",
                 f"override PIPELINE := {_shell(self.pipeline)}", f"override LIMIT := {self.values['LIMIT']}",
                 f"override OUT := {_shell(self.out)}", f"PREFIX := {self.prefix}",
                 f"INFER_SUFFIX := {self.infer_suffix}", f"SET := {' '.join(sets)}",
                 f"export ORCHESTRATOR_MAKE_VARIABLES := {' '.join(origins)}",
                 f"WEBUI := {' '.join(_shell(a) for a in self.webui)}"]
        lines += [f"{name} := {_files(files)}" for name, files in self.files.items()]
        for role in self.roles.values():
            up = role.role.upper()
            lines += [f"override {up}_RECIPE := {_shell(role.recipe)}", f"{up}_DEPS := {_files(role.files)}",
                      f"{up}_EXTRA := {_files(role.extra)}", f"{up}_RUN := {_files([role.run])}",
                      f"{up}_SET := {_files([role.dataset])}", f"{up}_WEIGHTS := {role.weights}"]
        lines.append(f"MAKE_VARS_STOP := {_make_text(self.stop)}")
        return "\n".join(lines) + "\n"


def _make_text(value: str) -> str:
    """`value` as the right side of a make assignment, which expands `$` and ends at `#`."""
    return value.replace("$", "$$").replace("#", r"\#")


def _shell(value: str) -> str:
    """One word of a command line make runs, whatever it holds."""
    return _make_text(shlex.quote(value))


def _files(paths: list[str]) -> str:
    """Files of a make rule: a space or a colon inside a name escaped."""
    return " ".join(_make_text(re.sub(r"([ :])", r"\\\1", p)) for p in paths)


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
    now = {k: v for k, v in {**kept, **given}.items() if v}
    # a data file that is not there: this call uses it (its stage's error names it), the next does not
    unkept = [n for n in DATA_FILES if given.get(n) and not (project_root() / given[n]).is_file()]
    stored = {k: v for k, v in {**kept, **{n: v for n, v in given.items() if n not in unkept}}.items() if v}
    if stored != kept:
        atomic_write_json(kept_path(), stored)
    result.unkept = [f"{n}={given[n]}" for n in unkept]
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


def _is_file(recipe: str) -> bool:
    return recipe.endswith((".yaml", ".yml"))


def recipe_prefix(recipe: str) -> str:
    """RECIPE=<set> names recipes/<set>-answer.yaml, -evaluate.yaml and -pipeline.yaml (if there)."""
    if not recipe or _is_file(recipe):
        return ""
    if not re.fullmatch(r"\w[\w.-]*", recipe):
        raise UserError(f"RECIPE={recipe}: give a set of recipes such as tiny (recipes/tiny-answer.yaml, "
                        "tiny-evaluate.yaml, tiny-pipeline.yaml) or one Answer recipe such as recipes/tiny-answer-b.yaml")
    return recipe + "-"


def role_recipe(role: str, call: dict[str, str]) -> tuple[str, str | None]:
    """The role's recipe file and the make variable that named it (None: the one RECIPE implies)."""
    own, variable = call[f"{role.upper()}_RECIPE"], f"{role.upper()}_RECIPE"
    if role == "answer" and _is_file(call["RECIPE"]):
        if own and own != call["RECIPE"]:
            raise UserError(f"RECIPE={call['RECIPE']} and ANSWER_RECIPE={own} name two Answer recipes: give one")
        return call["RECIPE"], "RECIPE"
    if own:
        return own, variable

    return _shown(default_role_recipe(role, recipe_prefix(call["RECIPE"]).removesuffix("-") or None)), None


def load_role_for_make(role: str, recipe: str, named_by: str | None) -> Role:

    try:
        loaded = load_role(role, recipe)
    except UserError as e:
        stem = re.sub(r"[^\w.-]+", "_", Path(recipe).stem) or role
        return Role(role, recipe, named_by, _existing([recipe]), f"runs/{stem}",
                    f"datasets/train_{role}_instruct.json", "merged", [], e.lines)
    r = loaded.recipe
    return Role(role, recipe, named_by, [_shown(f) for f in loaded.files()], f"runs/{r.run_name}",
                f"datasets/{r.dataset_name}.json", served_weights(r), _existing(list(r.dataset.extra.values())), [])


def data_files(result: MakeVars) -> None:
    """The files each stage reads, from the pipeline recipe with the values in force; a recipe
    that does not load lists only itself (the stage's own command says why)."""

    sets = [f"{key}={result.values[name]}" for name, key in result.settings()]
    result.files = {"PIPELINE_DEPS": _existing([result.pipeline]), "TRAIN_FILES": [], "TEST_FILES": [],
                    "GOLD_FILES": []}
    try:
        pipeline = load_pipeline(result.pipeline, sets)
    except UserError:
        return
    data = pipeline.recipe.data
    if data.test != DataSection().test:
        result.infer_suffix = "-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", Path(data.test).stem) or "test")
    result.files["PIPELINE_DEPS"] = [_shown(f) for f in pipeline.files()]
    result.files["TRAIN_FILES"] = _existing([data.train, data.fixes, *data.extra_train])
    result.files["TEST_FILES"] = _existing([data.test])
    result.files["GOLD_FILES"] = _existing([data.gold])


def eval_refusal(result: MakeVars) -> list[str]:
    """The Error lines of `orchestrator eval --check-only` with these recipes; none when it would run."""

    try:
        models = resolve_models(load_pipeline(result.pipeline), (), trained=True,
                                answer_recipes=[result.roles["answer"].recipe],
                                evaluate_recipe=result.roles["evaluate"].recipe)
        check_before_training(models.trained)
    except UserError as e:
        return e.lines
    return []


def where_make_stops(result: MakeVars, models: bool, eval_check: bool) -> tuple[list[str], str]:
    """(Error lines, make's last line) where make stops before it plans: a recipe a make
    variable named does not load, a role recipe does not load and the call builds `models`,
    or `make eval` (`eval_check`) would be refused; else ([], "")."""
    named = [r for r in result.roles.values() if r.errors and r.named_by]
    broken = [r for r in result.roles.values() if r.errors]
    if named:
        r = named[0]
        return r.errors, (f"{r.named_by}={r.recipe} is not an {r.role.capitalize()} recipe that loads; "
                          f"`orchestrator check {r.role} --recipe {r.recipe}` says why")
    if models and broken:
        lines = list(dict.fromkeys(line for r in broken for line in r.errors))  # (a parent of both: one line)
        return lines, "make stopped: a role recipe does not load (its Error is above)"
    refused = eval_refusal(result) if eval_check else []
    return refused, "make eval stopped before training: see the Error above" if refused else ""


def _limit(value: str) -> str:
    if value and not (value.isdigit() and int(value) > 0):
        raise UserError(f"LIMIT={value}: a number of problems such as 3 (LIMIT= for all of them)")
    return value


def _remember(values: dict[str, str]) -> None:
    """.make/train, test, gold: rewritten only when their values change."""
    folder = project_root() / ".make"
    for name, names in VALUE_FILES.items():
        text = " ".join(values[n] for n in names) + "\n"
        path = folder / name
        try:
            same = path.read_text(encoding="utf-8") == text
        except OSError:
            same = False
        if not same:
            atomic_write_text(path, text)


def make_vars(given: dict[str, str], out: Path, ignore_kept: bool = False, models: bool = False,
              eval_check: bool = False) -> MakeVars:
    """`given`: NAME=VALUE of the make call, each KEPT name only when the call gave it, each CALL
    name always. `models`: the call builds or serves models (a role recipe that does not load
    stops make); `eval_check`: it runs `make eval` (stop where eval would refuse)."""
    unknown = sorted(set(given) - set(KEPT) - set(CALL))
    if unknown:
        raise UserError(f"make-vars: {', '.join(unknown)} is not one of {' '.join(KEPT + CALL)}")
    if "LIMIT" in given:
        _limit(given["LIMIT"])
    call = {n: given.get(n, "") for n in CALL}
    roles = {role: role_recipe(role, call) for role in ("answer", "evaluate")}  # (refused before anything is kept)
    result = values_in_force({n: v for n, v in given.items() if n in KEPT}, ignore_kept)
    _limit(result.values["LIMIT"])
    result.prefix = recipe_prefix(call["RECIPE"])
    own_pipeline = project_root() / "recipes" / f"{result.prefix}pipeline.yaml"
    result.pipeline = result.values["PIPELINE"] or (
        f"recipes/{result.prefix}pipeline.yaml" if result.prefix and own_pipeline.is_file() else "recipes/pipeline.yaml")
    result.out = call["OUT"] or f"runs/{result.prefix}image"
    result.roles = {role: load_role_for_make(role, *chosen) for role, chosen in roles.items()}
    data_files(result)

    webui_role = call["ROLE"] or "answer"
    webui = result.roles[webui_role].recipe if webui_role in result.roles else f"recipes/{result.prefix}{webui_role}.yaml"
    result.webui = [webui_role, "--recipe", webui, *(["--port", call["PORT"]] if call["PORT"] else [])]

    result.errors, result.stop = where_make_stops(result, models, eval_check)
    values = {**result.values, "DISTILL_LIMIT": result.values["LIMIT"] + "0" if result.values["LIMIT"] else ""}
    _remember(values)
    atomic_write_text(out, result.fragment())
    return result
