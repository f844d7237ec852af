"""Stage: `run`, the plan of `orchestrator run TARGET...`: the stages a target needs, in order, each an
`orchestrator` command with its inputs by content (core/project/plan.py judges them).

A target is a model (answer-model, evaluate-model), a pipeline target (infer, score, all, eval,
package), one stage and what it needs (distill, dataset-answer, train-evaluate, merge-answer...),
or a command that always runs (check, webui). The values of the call (RECIPE=tiny TRAIN=...) are
resolved over the project state (core/project/state.py); each stage's command carries the recipes
and the values this call gave, and reads the kept ones itself, as a hand-typed one does.
`run_targets` is the planner's loop: it hands each command that runs to the callable it is given
(the CLI's own `main`), so it runs, and is tested, without click.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core.common.errors import UserError, did_you_mean
from orchestrator.core.common.paths import project_root, val_path
from orchestrator.core.data.heldout import check_before_training
from orchestrator.core.llamafactory.quantization import served_weights
from orchestrator.core.project.identity import Input, Inputs, file_input, flatten, folder_identity, file_identity
from orchestrator.core.project.identity import relative, value_text
from orchestrator.core.project.identity import identity as identity_of
from orchestrator.core.project.plan import Decision, Stage, finished, judge, read_record
from orchestrator.core.project.state import SETTINGS, Settings
from orchestrator.core.project.state import SHOWN, ignoring, read_state, resolve, state_path, using, write_state
from orchestrator.core.recipes.loading import Loaded, changed_by, load_pipeline, load_role, variant_hash
from orchestrator.core.recipes.overrides import naming_make_variables, parse_override, route_overrides
from orchestrator.core.recipes.schema import ROLES, DataSection, PipelineRecipe, RoleRecipe
from orchestrator.core.run_folders import kept_runs
from orchestrator.core.run_folders.role_paths import RolePaths, is_trained, model_path, role_paths, sft_of
from orchestrator.core.run_folders.trained import adapter_identity, merged_identity

# target -> the steps it needs, each a step name that `_steps` expands with what it needs in turn
TARGETS = {
    "answer-model": ["model-answer"], "evaluate-model": ["model-evaluate"],
    "infer": ["infer"], "score": ["score"], "all": ["score"], "eval": ["eval"], "package": ["package"],
    "check": ["check"], "webui": ["webui"],
    **{step: [step] for step in ("distill", *(f"{s}-{r}" for s in ("dataset", "base", "train", "merge") for r in ROLES))},
}
NEEDS = {
    "dataset-{r}": ["distill"], "train-{r}": ["dataset-{r}", "base-{r}"], "merge-{r}": ["train-{r}"],
    "infer": ["model-answer", "model-evaluate"], "score": ["infer"], "eval": ["model-answer", "model-evaluate"],
    "package": ["merge-answer", "merge-evaluate"], "check": ["base-answer", "base-evaluate"],
}
PROMPTS = ("templates/prompts/answer.j2", "templates/prompts/evaluate.j2", "templates/prompts/hint.j2")
DATA_KEYS = ("data.train", "data.fixes", "data.extra_train")  # the training questions, as named
# what each stage reads of a role recipe (its other keys change nothing it makes)
DATASET_KEYS = ("role", "name", "dataset", "fewshot", "model.template")
TRAIN_KEYS = ("role", "name", "model", "dataset", "train", "distributed")
MERGE_KEYS = ("name", "model", "merge", "serve.weights")
SERVE_KEYS = ("name", "model", "serve", "fewshot")


def _needs(step: str) -> list[str]:
    for pattern, needed in NEEDS.items():
        for role in ROLES:
            if pattern.format(r=role) == step:
                return [n.format(r=role) for n in needed]
    return []


@dataclass
class Call:
    """One call's recipes and values: what every stage's command is given."""

    settings: Settings
    pipeline: Loaded[PipelineRecipe]
    pipeline_file: str
    role_files: dict[str, str]
    sets: list[str]  # pipeline --set items: the values this call gave (the kept ones each command reads itself)
    role_sets: list[str] = field(default_factory=list)  # role recipe --set items of `run --set`
    pipeline_sets: list[str] = field(default_factory=list)  # pipeline recipe --set items of `run --set`
    roles: dict[str, Loaded[RoleRecipe]] = field(default_factory=dict)
    _variant: str | None = None

    def role(self, role: str) -> Loaded[RoleRecipe]:
        if role not in self.roles:
            self.roles[role] = load_role(role, self.role_files[role], self.role_sets)
        return self.roles[role]

    def variant(self) -> str:
        """"" for the recipes as they read now; `@<hash>` when this call's --set items change them:
        the hash of the changed values as a role variant computes it (recipes/loading.variant_hash),
        so `--set train.learning_rate=...` infers into runs/tiny-infer@<h>/ beside runs/tiny-answer@<h>/."""
        if self._variant is None:
            changed: dict[str, object] = {}
            keys = [parse_override(item)[0] for item in self.role_sets]
            for role in ROLES if self.role_sets else ():
                changed.update(changed_by(load_role(role, self.role_files[role]).raw, self.role(role).raw, keys))
            if self.pipeline_sets:
                as_read = load_pipeline(self.pipeline_file, [s for s in self.sets if s not in self.pipeline_sets])
                changed.update(changed_by(as_read.raw, self.pipeline.raw,
                                          [parse_override(item)[0] for item in self.pipeline_sets]))
            self._variant = f"@{variant_hash(changed)}" if changed else ""
        return self._variant

    @property
    def limit(self) -> int | None:
        value = self.settings.values["LIMIT"]
        return int(value) if value else None


def make_call(settings: Settings, overrides: tuple[str, ...] | list[str] = ()) -> Call:
    """The call's recipes loaded: the pipeline recipe with the values given (--set, as every
    command gets them), each role recipe when a stage first needs it."""
    role_sets, pipeline_sets = route_overrides(tuple(overrides))
    pipeline_file, _ = settings.pipeline()
    sets = [f"{key}={settings.values[name]}" for name, key in SETTINGS.items()
            if name in settings.given and settings.values[name]] + list(pipeline_sets)
    roles = {role: settings.role_recipe(role)[0] for role in ROLES}
    return Call(settings, load_pipeline(pipeline_file, sets), pipeline_file, roles, sets, list(role_sets),
                list(pipeline_sets))


def output_identity(path: str) -> str | None:
    """What a stage made, by content: an adapter by its manifest's hash, a merged model by its
    record, a file by its bytes, another folder by its files."""
    full = project_root() / path
    if full.name == "adapter" and (full.parent / "manifest.json").is_file():
        return adapter_identity(role_paths_of(full.parent), "answer") if (full / "adapter_model.safetensors").is_file() else None
    if full.name == "merged" and full.is_dir():
        return merged_identity(role_paths_of(full.parent))
    return file_identity(full) if not full.is_dir() else folder_identity(full)


def role_paths_of(run_dir: Path) -> RolePaths:
    return RolePaths(run_dir)


def _values(loaded: Loaded, keys: tuple[str, ...], prefix: str = "") -> Inputs:
    """The recipe's values under `keys`, dotted, each with the file (or --set) it comes from."""
    data = loaded.recipe.model_dump(mode="json")
    out: Inputs = {}
    for key in keys:
        node = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        leaves = flatten(node, key + ".") if isinstance(node, dict) and node else {key: node}
        for dotted, value in leaves.items():
            out[f"{prefix}{dotted}"] = Input(value=value_text(value), source=loaded.where(dotted))
    return out


def _data_files(data: DataSection, *keys: str) -> Inputs:
    out: Inputs = {}
    files: dict[str, list[str | None]] = {"train": [data.train], "test": [data.test], "gold": [data.gold], "fixes": [data.fixes],
             "extra_train": list(data.extra_train)}
    for key in keys:
        for file in files[key]:
            if file:
                name, item = file_input(file, f"data.{key}")
                out[name] = item
    return out


def _model_input(call: Call, role: str) -> Inputs:
    """A role's trained model as served: its adapter's or its merged model's identity."""
    loaded = call.role(role)
    paths = role_paths(loaded.recipe)
    if served_weights(loaded.recipe) == "adapter":
        return {f"model {relative(paths.adapter)}": Input(value=adapter_identity(paths, role))}
    return {f"model {relative(paths.merged)}": Input(value=merged_identity(paths) or "missing")}


def base_name(recipe: RoleRecipe) -> str:
    """The base model's folder as the recipe names it (relative to the project; a link not followed)."""
    return Path(recipe.model.path or Path(recipe.model.models_dir) / recipe.model.source).as_posix()


def _limit(call: Call, times: int = 1) -> list[str]:
    return ["--limit", str(call.limit * times)] if call.limit else []


def _sets(call: Call, role: bool = False, pipeline: bool = True) -> list[str]:
    """--set items for a command that reads the pipeline recipe, a role recipe, or both."""
    items = (call.sets if pipeline else []) + (call.role_sets if role else [])
    return [arg for item in items for arg in ("--set", item)]


def _limit_input(call: Call, times: int = 1) -> Inputs:
    return {"LIMIT": Input(value=str(call.limit * times) if call.limit else "none",
                           source=call.settings.origin("LIMIT") if call.limit else "")}


def _record_identity(stage: str) -> Input:
    record = read_record(stage)
    return Input(value=record.identity if record else "none", source=f"runs/.records/{stage}.json")


def _prefix(call: Call) -> str:
    return call.settings.prefix


def _infer_dir(call: Call) -> str:
    """runs/<prefix>infer (-<test file> for another test file), @<hash> for a --set variant's call."""
    data = call.pipeline.recipe.data
    if data.test == DataSection().test:
        return f"runs/{_prefix(call)}infer{call.variant()}"
    return f"runs/{_prefix(call)}infer-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", Path(data.test).stem) or "test") + call.variant()


def build(step: str, call: Call) -> list[Stage]:
    """The stages of one step."""
    p = call.pipeline
    if step == "distill":
        def distill_inputs() -> Inputs:
            return {**_values(p, DATA_KEYS + ("teacher",)), **_data_files(p.recipe.data, "train", "fixes", "extra_train"),
                    **dict(file_input(f) for f in PROMPTS), **_limit_input(call, 10)}
        return [Stage("distill", ["distill", "--pipeline", call.pipeline_file, *_sets(call), *_limit(call, 10)],
                      distill_inputs)]
    kind, _, role = step.partition("-")
    if kind == "model":
        loaded = call.role(role)
        return build(("train-" if served_weights(loaded.recipe) == "adapter" else "merge-") + role, call)
    if kind in ("dataset", "base", "train", "merge"):
        return _role_stages(kind, role, call.role(role), call.role_files[role], call)
    models = [f"{'train' if served_weights(call.role(r).recipe) == 'adapter' else 'merge'}-{call.role(r).recipe.run_name}"
              for r in ROLES]

    def serving_inputs() -> Inputs:
        out = {**_values(p, ("inference",))}
        for r in ROLES:
            out.update(_model_input(call, r))
            out.update(_values(call.role(r), SERVE_KEYS, prefix=f"{r}: "))
        return out
    recipes = ["--answer-recipe", call.role_files["answer"], "--evaluate-recipe", call.role_files["evaluate"]]
    if step == "infer":
        out_dir = _infer_dir(call)
        return [Stage(f"infer-{Path(out_dir).name}", ["infer", "--out-dir", out_dir, "--pipeline", call.pipeline_file,
                      *_sets(call, role=True), *_limit(call), *recipes],
                      lambda: {**serving_inputs(), **_values(p, ("data.test", "data.train")),
                               **_data_files(p.recipe.data, "test", "train"), **_limit_input(call)},
                      outputs=[f"{out_dir}/submission.jsonl"], after=models, keeps=out_dir)]
    if step == "score":
        out_dir = _infer_dir(call)
        return [Stage(f"score-{Path(out_dir).name}", ["score", f"{out_dir}/submission.jsonl", "--pipeline",
                      call.pipeline_file, *_sets(call), "--out-dir", out_dir],
                      lambda: {**dict([file_input(f"{out_dir}/submission.jsonl", "infer")]),
                               **_values(p, ("data.gold",)), **_data_files(p.recipe.data, "gold")},
                      outputs=[f"{out_dir}/report.md"], after=[f"infer-{Path(out_dir).name}"])]
    if step == "eval":
        out_dir = f"runs/{_prefix(call)}eval{call.variant()}"
        val = relative(val_path(call.role("answer").recipe.dataset_variant))
        return [Stage(f"eval-{Path(out_dir).name}", ["eval", "--out-dir", out_dir, "--pipeline", call.pipeline_file,
                      *_sets(call, role=True), *recipes, *_limit(call)],
                      lambda: {**serving_inputs(), **dict([file_input(val, "dataset")]),
                               **_limit_input(call)},
                      outputs=[f"{out_dir}/report.md"], after=models, keeps=out_dir)]
    if step == "package":
        out = call.settings.values["OUT"] or f"runs/{_prefix(call)}image{call.variant()}"
        return [Stage(f"package-{Path(out).name}", ["package", "--out", out, "--pipeline", call.pipeline_file,
                      *_sets(call, role=True)], dict, always=True)]
    if step == "check":
        return [Stage(f"check-{r}", ["check", r, "--recipe", call.role_files[r], "--pipeline", call.pipeline_file,
                                          *_sets(call, role=True)], dict, always=True) for r in ROLES]
    if step == "webui":
        role = call.settings.values["ROLE"] or "answer"
        if role not in ROLES:
            raise UserError(f"ROLE={role}: answer or evaluate")
        port = call.settings.values["PORT"]
        return [Stage("webui", ["webui", role, "--recipe", call.role_files[role], *(["--port", port] if port else []),
                      *_sets(call, role=True, pipeline=False)],
                      dict, always=True)]
    raise UserError(f"{step}: not a target")



def _role_stages(kind: str, role: str, loaded: Loaded[RoleRecipe], file: str, call: Call) -> list[Stage]:
    """A role recipe's dataset, base, train or merge stage."""
    p = call.pipeline
    recipe = loaded.recipe
    paths = role_paths(recipe)
    if kind == "dataset" and (sft := sft_of(recipe)) is not None:
        return _preference_stages(role, loaded, file, sft, call)
    if kind == "dataset":
        def dataset_inputs() -> Inputs:
            return {**_values(loaded, DATASET_KEYS), **_values(p, DATA_KEYS + ("teacher",)),
                    **_data_files(p.recipe.data, "train", "fixes", "extra_train"),
                    **dict(file_input(f) for f in PROMPTS), "stage distill": _record_identity("distill")}
        return [Stage(f"dataset-{recipe.dataset_name}", ["dataset", role, "--recipe", file, "--pipeline",
                      call.pipeline_file, *_sets(call, role=True)], dataset_inputs,
                      outputs=[f"datasets/{recipe.dataset_name}.json"], after=["distill"])]
    if kind == "base":
        base = base_name(recipe)
        command = ["tiny-model", base] if _prefix(call) == "tiny-" else ["download", role, "--recipe", file]
        ident = "base-" + base.replace("/", "_")  # one stage for two roles of one base
        return [Stage(ident, command, dict, outputs=[f"{base}/config.json"], present=True)]
    if kind == "train":
        def train_inputs() -> Inputs:
            sets = {recipe.dataset_name: f"datasets/{recipe.dataset_name}.json"}
            if recipe.has_eval_set:
                sets[recipe.eval_dataset_name] = f"datasets/{recipe.eval_dataset_name}.json"
            sets.update({name: f for name, f in recipe.dataset.extra.items() if f})
            out = {**_values(loaded, TRAIN_KEYS), **dict(file_input(f, "dataset") for f in sets.values()),
                   f"model {base_name(recipe)}": Input(value=folder_identity(model_path(recipe)) or "missing",
                                                       source="the base model")}
            if (sft := sft_of(recipe)) is not None:  # a preference training: the SFT model is its reference
                sft_paths = role_paths(sft.recipe)
                out[f"model {relative(sft_paths.adapter)}"] = Input(value=adapter_identity(sft_paths, role),
                                                                    source="the SFT model")
            return out
        return [Stage(f"train-{recipe.run_name}", ["train", role, "--recipe", file, *_sets(call, role=True, pipeline=False)], train_inputs,
                      outputs=[relative(paths.adapter)],
                      after=[f"dataset-{recipe.dataset_name}", "base-" + base_name(recipe).replace("/", "_")])]
    def merge_inputs() -> Inputs:
        out = {**_values(loaded, MERGE_KEYS), f"model {relative(paths.adapter)}":
               Input(value=adapter_identity(paths, role), source="the trained adapter")}
        if recipe.merge.get("export_quantization_bit"):  # calibrated on the call's training questions
            out.update(_data_files(p.recipe.data, "train"))
        return out
    return [Stage(f"merge-{recipe.run_name}", ["merge", role, "--recipe", file, "--pipeline", call.pipeline_file,
                  *_sets(call, role=True)], merge_inputs, outputs=[relative(paths.merged)], after=[f"train-{recipe.run_name}"])]


def _preference_stages(role: str, loaded: Loaded[RoleRecipe], file: str, sft: Loaded[RoleRecipe],
                       call: Call) -> list[Stage]:
    """A preference recipe's set (train.stage: dpo): the SFT recipe's model first (its set, base,
    training and merge, each judged as its own), then the pairs sampled from it, which the
    planner knows by the SFT model's identity (a retrained SFT model samples again)."""
    sft_file = relative(sft.path)
    sft_paths = role_paths(sft.recipe)
    steps = ["dataset", "base", "train", *(["merge"] if loaded.recipe.preference.reference == "merged"
                                           or served_weights(sft.recipe) != "adapter" else [])]
    stages = [stage for kind in steps for stage in _role_stages(kind, role, sft, sft_file, call)]
    recipe, p = loaded.recipe, call.pipeline

    def pairs_inputs() -> Inputs:
        return {**_values(loaded, DATASET_KEYS + ("preference",)), **_values(p, DATA_KEYS),
                **_data_files(p.recipe.data, "train", "fixes", "extra_train"), **dict(file_input(f) for f in PROMPTS),
                f"model {relative(sft_paths.adapter)}": Input(value=adapter_identity(sft_paths, role),
                                                              source="the SFT model")}
    stages.append(Stage(f"dataset-{recipe.dataset_name}", ["dataset", role, "--recipe", file, "--pipeline",
                        call.pipeline_file, *_sets(call, role=True)], pairs_inputs,
                        outputs=[f"datasets/{recipe.dataset_name}.json"], after=[stages[-1].id]))
    return stages


def _steps(targets: list[str]) -> list[str]:
    """Every step the targets need, each after what it needs, each once."""
    order: list[str] = []

    def visit(step: str) -> None:
        if step in order:
            return
        for needed in _needs(step):
            visit(needed)
        if step.startswith("model-"):
            visit("train-" + step[6:])  # (merge-<role> when it merges: build decides)
        order.append(step)

    for target in targets:
        if target not in TARGETS:
            raise UserError(f"{target}: not a target of `orchestrator run`; the targets are "
                            f"{' '.join(TARGETS)}{did_you_mean(target, list(TARGETS))}")
        for step in TARGETS[target]:
            visit(step)
    return order


def plan(targets: list[str], call: Call) -> list[Stage]:
    """The stages of the targets, in order, each once. `make eval` is refused here, before any
    training, when eval would refuse the recipes."""
    if "eval" in targets:
        check_before_training([call.role(r) for r in ROLES])
    stages: list[Stage] = []
    for step in _steps(targets):
        for stage in build(step, call):
            if stage.id not in {s.id for s in stages}:
                stages.append(stage)
    return stages


def trained(call: Call, role: str) -> bool:
    return is_trained(role_paths(call.role(role).recipe))


def before_running(decision: Decision, dry_run: bool = False) -> str | None:
    """An infer or eval stage about to run into its folder: the run there of another identity kept
    in <folder>/kept/<identity>/, a kept run of this identity brought back (the planner then judges
    the stage again: up to date, nothing asked); the line that says so, None when nothing moved."""
    stage = decision.stage
    if not stage.keeps:
        return None
    folder, ident = project_root() / stage.keeps, identity_of(decision.inputs or stage.inputs())
    if dry_run:
        entry = kept_runs.kept_entry(folder, ident)
        return f"{stage.id}: run before on these inputs, kept in {relative(entry)}: it would come back" if entry else None
    prepared = kept_runs.prepare(folder, ident, stage.id)
    said = []
    if prepared.kept is not None:
        said.append(f"the run in {stage.keeps} (another configuration) kept in {relative(prepared.kept)}")
    if prepared.restored:
        said.append(f"run before on these inputs: {stage.keeps} is back from {stage.keeps}/kept/{ident}")
    return f"{stage.id}: " + "; ".join(said) if said else None


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _to_stdout(line: str) -> None:
    print(line, flush=True)


def run_targets(targets: Sequence[str], given: dict[str, str], overrides: Sequence[str] = (), *,
                run_stage: Callable[[list[str]], object], dry_run: bool = False, ignore_state: bool = False,
                say: Callable[[str], None] = _to_stdout, note: Callable[[str], None] = _to_stderr) -> list[Decision]:
    """`orchestrator run`: the targets' stages planned over the values `given` (NAME -> VALUE,
    resolved over the project state) and `overrides` (--set items), each judged in turn and, when
    it runs, its command handed to `run_stage` (the `orchestrator` arguments), then recorded. The
    state is written once the plan stands (a refused call keeps nothing); a dry run writes and runs
    nothing. `say` gets the plan (each stage's line, each command); `note` what the call keeps.
    Returns each stage's decision, in order."""
    with ignoring() if ignore_state else nullcontext():
        settings, keep = resolve(dict(given), ignore=ignore_state)
        on_file = None if ignore_state else (read_state() if state_path().is_file() else {})
        for line in settings.notes():
            note(f"[run] {line}")
        origins = {key: name for name, key in SETTINGS.items() if name in settings.given}
        with naming_make_variables(origins), using(keep) if not ignore_state else nullcontext():
            stages = plan(list(targets), make_call(settings, tuple(overrides)))
            if on_file is not None and keep != on_file:  # once the recipes load and the plan stands
                if dry_run:
                    note(f"[run] would keep in {SHOWN}: " + (" ".join(f"{k}={v}" for k, v in keep.items()) or "nothing"))
                else:
                    write_state(keep)
            decisions: list[Decision] = []
            running: set[str] = set()
            for stage in stages:
                decision = judge(stage, running if dry_run else set(), output_identity)
                decisions.append(decision)
                say(f"[run] {decision.line()}")
                if decision.runs and (moved := before_running(decision, dry_run)) is not None:
                    say(f"[run] {moved}")  # an infer or eval folder's run kept, or one brought back
                    again = decision if dry_run else judge(stage, set(), output_identity)
                    if not again.runs:  # a kept run of these inputs came back: nothing to ask
                        decision = decisions[-1] = again
                if not decision.runs:
                    continue
                running.add(stage.id)
                say(f"$ orchestrator {shlex.join(stage.command)}")
                if dry_run:
                    continue
                run_stage(list(stage.command))
                if not (stage.always or stage.present):
                    finished(decision, output_identity)
    return decisions
