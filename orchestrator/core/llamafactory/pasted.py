"""LLaMA-Factory keys pasted into a recipe's `train:` or `merge:` (a published train YAML, a
LlamaBoard preview): a key we render ourselves is accepted when it says what we render and
refused in one line when not; a key that would break our resume (`overwrite_output_dir`) is
refused; an epoch count that an inherited `max_steps` would silently override is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import display, project_root
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.reading import read_yaml
from orchestrator.core.recipes.schema import RoleRecipe

# Keys we render ourselves, and the recipe key that sets each.
OURS = {
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
    "trust_remote_code": "nothing: it is always true",
}
_PATHS = {"model_name_or_path", "dataset_dir", "output_dir", "deepspeed", "adapter_name_or_path", "export_dir"}


def same_value(key: str, given: Any, ours: Any) -> bool:
    """Whether a pasted value says what we render: paths by where they lead (relative to the
    project), dataset lists by their names, numbers by value, lists and comma text alike."""
    if given is None or ours is None:
        return given is ours
    if key in _PATHS:
        try:
            return (project_root() / str(given)).resolve() == Path(str(ours)).resolve()
        except (OSError, ValueError):
            return False
    if isinstance(given, bool) or isinstance(ours, bool):
        return str(given).lower() == str(ours).lower()
    if isinstance(given, (list, tuple)) or isinstance(ours, (list, tuple)) or key.endswith("dataset"):
        def names(v: Any) -> list[str]:
            return [str(x).strip() for x in (v if isinstance(v, (list, tuple)) else str(v).split(","))]
        return names(given) == names(ours)
    try:
        return float(given) == float(ours)
    except (TypeError, ValueError):
        return str(given) == str(ours)


def refuse_disagreeing(loaded: Loaded[RoleRecipe], section: str, args: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """One line per key of ours given in `section` with another value than we render."""
    problems = []
    for key, value in args.items():
        if key not in OURS or value is None or same_value(key, value, ours.get(key)):
            continue
        dotted = f"{section}.{key}"
        renders = f"it renders {ours[key]!r}" if key in ours else "it renders none here"
        problems.append(f"{loaded.where(dotted)}: {dotted} is filled in by the orchestrator; set {OURS[key]} instead "
                        f"({renders}; {value!r} given; the same value is accepted)")
    return problems


def not_ours(args: dict[str, Any]) -> dict[str, Any]:
    """`args` without the keys we render (pasted ones agree, refuse_disagreeing saw to it)."""
    return {k: v for k, v in args.items() if k not in OURS}


def resume_breakers(loaded: Loaded[RoleRecipe]) -> list[str]:
    """Keys that would make `orchestrator train` say it resumes and then start over."""
    if loaded.recipe.train.get("overwrite_output_dir"):
        return [f"{loaded.where('train.overwrite_output_dir')}: train.overwrite_output_dir: true would restart a "
                "resumed training at step 0 after we said it resumes; remove it (`orchestrator train ROLE --fresh` "
                "starts over, keeping the previous adapter aside)"]
    return []


def chain(path: Path) -> list[str]:
    """The recipe's files as `where` names them, the recipe first, then each parent it extends."""
    files: list[str] = []
    seen: set[Path] = set()
    current: Path | None = path
    while current is not None and current.resolve() not in seen:
        seen.add(current.resolve())
        files.append(display(current))
        try:
            parent = read_yaml(current).get("extends")
        except UserError:  # the loader reported it already
            break
        current = (current.parent / parent) if isinstance(parent, str) else None
    return files


def overridden_epochs(loaded: Loaded[RoleRecipe]) -> list[str]:
    """num_train_epochs set closer to the user (the recipe, --set) than a parent's max_steps,
    which LLaMA-Factory lets win: refused, so the epochs asked for are not silently ignored."""
    train = loaded.recipe.train
    steps = train.get("max_steps")
    if train.get("num_train_epochs") is None or not isinstance(steps, int) or steps <= 0:
        return []  # a max_steps that is no count is LLaMA-Factory's parser's to refuse
    files = chain(loaded.path)

    def rank(dotted: str) -> int:
        where = loaded.where(dotted)
        return files.index(where) if where in files else -1  # --set and flags: closest of all

    if rank("train.num_train_epochs") < rank("train.max_steps"):
        return [f"{loaded.where('train.num_train_epochs')}: train.num_train_epochs "
                f"{train['num_train_epochs']} would be ignored: train.max_steps {steps} (from "
                f"{loaded.where('train.max_steps')}) stops the training first; add `max_steps: null` under train: "
                "to train by epochs, or drop num_train_epochs"]
    return []


def pasted_problems(loaded: Loaded[RoleRecipe], ours_train: dict[str, Any], ours_merge: dict[str, Any]) -> list[str]:
    """Every problem with pasted keys of the recipe, at once."""
    recipe = loaded.recipe
    return (refuse_disagreeing(loaded, "train", recipe.train, ours_train)
            + refuse_disagreeing(loaded, "merge", recipe.merge, ours_merge)
            + resume_breakers(loaded) + overridden_epochs(loaded))
