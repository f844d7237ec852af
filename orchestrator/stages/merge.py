"""Stage: merge a role's adapter into its base model with `llamafactory-cli export`.

The export goes to a temporary folder renamed to runs/<name>/merged/ only on success, so a
half-written model is never taken as done. Its saved tokenizer is given LLaMA-Factory's chat
template of the recipe (core/llamafactory/chat_template.py), so the folder renders the training prompt on any
engine. A role that serves its adapter (serve.weights
adapter, or auto on a quantized base) is not merged: the merge says why and stops."""

from __future__ import annotations

import shutil
from pathlib import Path

from orchestrator.core.common.errors import StageFailed, UserError
from orchestrator.core.common.files import atomic_write_jsonl, file_hash
from orchestrator.core.common.ledger import stable_key
from orchestrator.core.common.paths import display, project_root
from orchestrator.core.common.process import run
from orchestrator.core.common.progress import clean, say, worth_showing
from orchestrator.core.data.competition import read_dataset
from orchestrator.core.llamafactory import chat_template
from orchestrator.core.project.identity import value_hash
from orchestrator.core.llamafactory.chat_template import JINJA_FILE, save_template, template_args
from orchestrator.core.llamafactory.checks import check_roles
from orchestrator.core.llamafactory.gptq import calibration_texts, gptq_export
from orchestrator.core.llamafactory.launch import cli_path, no_gpu_env
from orchestrator.core.llamafactory.parser import Accepted
from orchestrator.core.llamafactory.quantization import QUANTIZE_KEYS, base_quantization, quantized_anywhere, served_weights
from orchestrator.core.recipes.loading import Loaded, command_for
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.kept import MERGED_REMOVED, check_out, copy_in, find
from orchestrator.core.run_folders.locks import run_lock
from orchestrator.core.run_folders.records import MERGED_FILE, MergedStamp, read_merged_stamp, write_record_file
from orchestrator.core.run_folders.role_paths import ADAPTER_FILE, is_trained, model_path, role_paths
from orchestrator.core.run_folders.trained import adapter_identity, portable_hash
from orchestrator.core.run_folders.training_inputs import training_inputs


def needs_calibration(loaded: Loaded[RoleRecipe]) -> bool:
    """A quantized export: it needs calibration data (the pipeline recipe's data.train)."""
    return bool(loaded.recipe.merge.get("export_quantization_bit"))


def skip_reason(loaded: Loaded[RoleRecipe]) -> str:
    """Why a role that serves its adapter is not merged (serve.weights adapter, or auto)."""
    recipe, where = loaded.recipe, loaded.where("serve.weights")
    adapter = role_paths(recipe).adapter
    method = base_quantization(recipe)
    if method:
        return (f"skipped: {model_path(recipe)} is {method.upper()}-quantized, which LLaMA-Factory cannot merge "
                f"into; {adapter} is served on it (serve.weights {recipe.serve.weights}, {where})")
    return f"skipped: serve.weights adapter ({where}): {adapter} is served on its base; --set serve.weights=merged merges it"


def _merged_from(merged: Path) -> object:
    """The inputs a merged model records (None: none recorded)."""
    stamp = read_merged_stamp(merged)
    return stamp.inputs if stamp else None


# Where a run folder remembers that its merged tokenizer carries the recipe's template.
TEMPLATE_CHECKED = ".llamafactory-accepted-template"


def _template_done(loaded: Loaded[RoleRecipe], folder: Path) -> Accepted:
    """The merged tokenizer's template files as they were when save_template last saw them carry
    the recipe's template (loading the tokenizer and LLaMA-Factory's template costs seconds)."""
    files = [(folder / name).read_text(encoding="utf-8") if (folder / name).is_file() else None
             for name in (JINJA_FILE, "tokenizer_config.json")]
    return Accepted(role_paths(loaded.recipe).run_dir / TEMPLATE_CHECKED, template_args(loaded.recipe), files,
                    code=[chat_template.__file__])


def _save_template(loaded: Loaded[RoleRecipe], folder: Path) -> bool:
    """LLaMA-Factory's template into the merged tokenizer; a template it cannot give as Jinja is
    left as it is (llamafactory-cli api applies its own template anyway), with a warning."""
    if _template_done(loaded, folder).before():
        return False
    try:
        saved = save_template(loaded.recipe, folder)
    except UserError as e:
        say(f"merge {loaded.recipe.run_name}", f"warning: {e.lines[0]}; {folder} keeps its base's chat template")
        return False
    _template_done(loaded, folder).remember()
    return saved


def merge(loaded: Loaded[RoleRecipe], *, calibration_data: str | Path | None = None,
          timeout: float | None = None, echo: bool = True) -> Path:
    """`_merge` holding the run folder's lock: never beside a training of the same role."""
    with run_lock(role_paths(loaded.recipe).run_dir, command_for(loaded, "merge")):
        return _merge(loaded, calibration_data=calibration_data, timeout=timeout, echo=echo)


def _merge(
    loaded: Loaded[RoleRecipe],
    *,
    calibration_data: str | Path | None = None,
    timeout: float | None = None,
    echo: bool = True,
) -> Path:
    """Merge the adapter into runs/<name>/merged/ and return it; a role that serves its adapter
    is not merged (one line says why) and its adapter is returned."""
    stage = f"merge {loaded.recipe.run_name}"
    paths = role_paths(loaded.recipe)
    if not is_trained(paths):
        check_out(paths.run_dir.name)  # a kept training named by `orchestrator runs`: linked into its folder
    if not is_trained(paths) and served_weights(loaded.recipe) != "adapter" and not paths.adapter.exists():
        # a variant of merge keys only (--set merge.export_quantization_bit=4): its training is another folder's
        check_roles([loaded])
        source = find(value_hash(training_inputs(loaded, paths)), paths.run_dir)
        if source is not None:
            copy_in(source, paths)
            say(stage, f"the adapter trained on these inputs in {display(source)} linked into {display(paths.adapter)}")
    if not is_trained(paths):
        what = "an unfinished training" if paths.adapter.exists() else "no trained adapter"
        raise UserError(
            f"{paths.adapter} has {what} (no {ADAPTER_FILE}): run `{command_for(loaded, 'train')}` first"
        )
    if served_weights(loaded.recipe) == "adapter":
        say(stage, skip_reason(loaded))
        return paths.adapter
    (checked,) = check_roles([loaded])
    paths, resolved = checked.paths, checked.resolved
    assert resolved is not None  # checked: LLaMA-Factory's values, its defaults included
    export = resolved.merge
    questions: list = []
    quantize = needs_calibration(loaded)
    if quantize:
        if calibration_data is None:
            raise UserError(f"{loaded.where('merge')}: a quantized export needs calibration_data (data.train)")
        questions = read_dataset(project_root() / calibration_data).questions  # (data.train: relative to the project)
        atomic_write_jsonl(paths.calibration, calibration_texts(questions, int(export["export_quantization_maxlen"])))

    # by content: the adapter's identity, merge.yaml with its folders as placeholders (a moved
    # project merges nothing again), the calibration texts and the quantization settings
    inputs = {"adapter": adapter_identity(paths, loaded.recipe.role),
              "merge_yaml": portable_hash(paths.merge_yaml, model_path(loaded.recipe)),
              "calibration": file_hash(paths.calibration) if quantize else None,
              "quantize": {name: loaded.recipe.merge.get(name) for name in QUANTIZE_KEYS} if quantize else None}
    if _merged_from(paths.merged) == inputs and (paths.merged / "config.json").is_file():
        if _save_template(loaded, paths.merged):  # merged before its tokenizer got LF's template
            say(stage, f"{paths.merged}: its tokenizer now carries LLaMA-Factory's {loaded.recipe.model.template} "
                       "chat template, the prompt it was trained on")
        if echo:
            say(stage, f"up to date: {paths.merged} was merged from this training with the same merge.yaml")
        return paths.merged

    if bits := loaded.recipe.train.get("quantization_bit"):
        say(stage, f"a QLoRA adapter (train.quantization_bit {bits}): merged into the unquantized base "
                   f"{model_path(loaded.recipe)}, LLaMA-Factory's way; serve.weights adapter serves it on the "
                   f"{bits}-bit load instead")
    removed = paths.run_dir / MERGED_REMOVED
    if removed.is_file() and echo:
        say(stage, f"merging again from its adapter: this training's merged copy was removed to bound the disk it "
                   f"takes (keep.merged {loaded.recipe.keep.merged}, {loaded.where('keep.merged')})")
    tmp = paths.run_dir / ".merged.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    full = paths.run_dir / ".merged-full.tmp"  # a quantized export: the merge, before it is quantized
    shutil.rmtree(full, ignore_errors=True)
    cmd = [cli_path(), "export", str(paths.merge_yaml), f"export_dir={full if quantize else tmp}"]
    log = paths.run_dir / "merge.log"
    env = {"DISABLE_VERSION_CHECK": "1", **no_gpu_env(quantized=quantized_anywhere(loaded.recipe))}
    if export["export_device"] == "cpu":  # LLaMA-Factory's default: said or not
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU export: do not take a GPU others may be using
    if echo:
        say(stage, f"$ {' '.join(cmd)}   (log: {log})")
    finished = run(
        cmd,
        stage=stage,
        log_path=log,
        env=env,
        cwd=paths.run_dir,
        timeout=timeout,
        on_line=(lambda line: say(stage, clean(line)) if worth_showing(line) else None) if echo else None,
    )
    if finished.returncode != 0 or not ((full if quantize else tmp) / "config.json").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(full, ignore_errors=True)
        raise StageFailed(
            f"{stage}: llamafactory-cli export exited with code {finished.returncode}; last lines:",
            *[f"  {line}" for line in finished.tail[-12:]],
            f"rendered config: {paths.merge_yaml}; full log: {log}",
        )
    seconds = finished.seconds
    if quantize:
        try:
            seconds += gptq_export(
                full, tmp, questions=questions, template=loaded.recipe.model.template, stage=stage,
                work_dir=paths.run_dir, bits=int(loaded.recipe.merge["export_quantization_bit"]),
                nsamples=int(export["export_quantization_nsamples"]), maxlen=int(export["export_quantization_maxlen"]),
                export_size=int(export["export_size"]), timeout=timeout, echo=echo,
            )
        finally:
            shutil.rmtree(full, ignore_errors=True)
    _save_template(loaded, tmp)  # LF's export keeps the base tokenizer's own template
    write_record_file(tmp / MERGED_FILE, MergedStamp(
        role=loaded.recipe.role, adapter=str(paths.adapter), merge_yaml=str(paths.merge_yaml),
        seconds=round(seconds, 1), inputs=inputs, identity=stable_key(**inputs)[:16]))
    old = paths.run_dir / ".merged.old"
    shutil.rmtree(old, ignore_errors=True)
    if paths.merged.exists():
        paths.merged.rename(old)
    tmp.rename(paths.merged)
    shutil.rmtree(old, ignore_errors=True)
    removed.unlink(missing_ok=True)
    return paths.merged
