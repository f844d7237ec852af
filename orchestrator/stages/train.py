"""Stage: train a role's LoRA adapter with `llamafactory-cli train`, resumable."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from orchestrator.core.common.errors import StageFailed, UserError
from orchestrator.core.common.files import file_hash
from orchestrator.core.common.paths import datasets_dir, display, project_root
from orchestrator.core.common.process import run
from orchestrator.core.common.progress import bar, clean, say, worth_showing
from orchestrator.core.data.sources import training_data
from orchestrator.core.llamafactory.checks import check_roles
from orchestrator.core.llamafactory.launch import cli_path, launch_env, launch_line, visible_gpus, what_ran
from orchestrator.core.recipes.loading import Loaded, command_for
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.locks import run_lock
from orchestrator.core.run_folders.records import Manifest, write_record_file
from orchestrator.core.run_folders.role_paths import ADAPTER_FILE, RolePaths, is_trained, model_path, role_paths, sft_of
from orchestrator.core.project.identity import relative, value_hash
from orchestrator.core.run_folders.kept import (
    bound_merged,
    copy_in,
    entry_dir,
    find,
    finish_moves,
    finished as finished_in,
    keep,
    recorded_identity,
    record_start,
    restore,
)
from orchestrator.core.run_folders.trained import adapter_hash, portable_hash, read_manifest
from orchestrator.core.run_folders.training_inputs import dataset_files, training_inputs


@dataclass
class Trained:
    paths: RolePaths
    final_loss: float | None
    seconds: float
    resumed_from: str | None
    distributed: dict | None = None  # what the launch did (core/llamafactory/launch.py what_ran)
    up_to_date: bool = False  # nothing changed since the recorded training: nothing was run
    rewards: dict | None = None  # a preference training's first and last logged rewards/* (preference_rewards)

    @property
    def saved_here(self) -> bool:
        """Rank 0 saves the model: a node of node_rank > 0 trained its share and holds none."""
        return not self.distributed or self.distributed["node_rank"] == 0


def is_complete_checkpoint(path: Path) -> bool:
    """The Trainer writes trainer_state.json last: without it (readable) the save was cut short."""
    try:
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def checkpoints(adapter_dir: Path) -> list[Path]:
    """The checkpoint-N folders, in step order."""
    found = [(int(m.group(1)), p) for p in adapter_dir.glob("checkpoint-*")
             if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))]
    return [p for _, p in sorted(found)]


def set_aside_incomplete(adapter_dir: Path) -> list[Path]:
    """Rename checkpoints whose save was cut short to incomplete-checkpoint-N: LLaMA-Factory
    resumes from the highest checkpoint-N folder and fails on a partial one."""
    moved = []
    for path in checkpoints(adapter_dir):
        if not is_complete_checkpoint(path):
            target = path.with_name(f"incomplete-{path.name}")
            if target.exists():
                shutil.rmtree(target)
            path.rename(target)
            moved.append(target)
    return moved


def last_checkpoint(adapter_dir: Path) -> Path | None:
    """The latest complete checkpoint."""
    complete = [p for p in checkpoints(adapter_dir) if is_complete_checkpoint(p)]
    return complete[-1] if complete else None


def read_trainer_log(adapter_dir: Path) -> list[dict]:
    path = adapter_dir / "trainer_log.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def preference_rewards(adapter_dir: Path) -> dict | None:
    """LLaMA-Factory's DPO metrics (rewards/chosen, rejected, margins, accuracies) at the first and
    the last logged step, from trainer_state.json; None without them. At the first step the
    policy is the reference when the reference is the model trained on, so its rewards are 0."""
    try:
        history = json.loads((adapter_dir / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    logged = [{k: v for k, v in h.items() if k.startswith("rewards/") or k == "step"}
              for h in history if isinstance(h, dict) and "rewards/margins" in h]
    return {"first": logged[0], "last": logged[-1]} if logged else None


def _absolute_inputs(loaded: Loaded[RoleRecipe], paths: RolePaths) -> dict[str, object]:
    """The inputs as manifests without an adapter_hash recorded them (absolute paths), to read
    those manifests: an adapter they describe is not trained again for an upgrade."""
    base = model_path(loaded.recipe)
    config = base / "config.json"
    return {
        "train_yaml": file_hash(paths.train_yaml),
        "datasets": {name: file_hash(path) if path.is_file() else None for name, path in dataset_files(loaded).items()},
        "base_model": {"path": str(base), "config": file_hash(config) if config.is_file() else None},
    }


def _same_training(loaded: Loaded[RoleRecipe], paths: RolePaths, manifest: Manifest, inputs: dict[str, object]) -> bool:
    """A manifest written before identities: its inputs are these, as this version reads them, as
    the last version did (the run folder not a placeholder), or with absolute paths."""
    old = manifest.inputs
    if not _changed(old, inputs):
        return True
    base = model_path(loaded.recipe)
    if not _changed(old, {**inputs, "train_yaml": portable_hash(paths.train_yaml, base)}):
        return True
    return manifest.adapter_hash is None and not _changed(old, _absolute_inputs(loaded, paths))


def _final_loss(paths: RolePaths, loaded: Loaded[RoleRecipe]) -> float | None:
    manifest = read_manifest(paths, loaded.recipe.role)
    return manifest.final_loss if manifest else None


def _changed(old: object, new: dict[str, object]) -> list[str]:
    """The names of the inputs that differ (all of them for a manifest without inputs)."""
    old = old if isinstance(old, dict) else {}
    return [key for key in new if old.get(key) != new[key]]


def _preflight(loaded: Loaded[RoleRecipe], paths: RolePaths) -> None:
    recipe = loaded.recipe
    base = model_path(recipe)
    if not (base / "config.json").exists() and sft_of(recipe):
        raise UserError(f"the SFT model {base} this preference training starts from is not built: "
                        f"`orchestrator preference --recipe {display(loaded.path)}` builds it, the pairs and this model")
    if not (base / "config.json").exists():
        raise UserError(
            f"no base model in {base}: run `{command_for(loaded, 'download')}` "
            f"(or `orchestrator tiny-model {base}` for a CPU test model)"
        )
    held_out = [recipe.eval_dataset_name] if recipe.has_eval_set else []  # train.yaml's eval_dataset
    for name in [recipe.dataset_name, *held_out]:
        data = datasets_dir() / f"{name}.json"
        if not data.exists():
            raise UserError(f"{data} does not exist yet: run `{command_for(loaded, 'dataset')}`")
        try:
            rows = json.loads(data.read_text(encoding="utf-8"))
        except ValueError:
            raise UserError(f"{data}: not valid JSON; rebuild it with `{command_for(loaded, 'dataset')}`") from None
        if not rows:
            raise UserError(f"{data} has no samples: nothing to train on (see `{command_for(loaded, 'dataset')}`)")


def _mixed_precision_needs_a_gpu(loaded: Loaded[RoleRecipe], gpus: list[str]) -> None:
    """bf16 or fp16 on a machine without a GPU (a pasted LLaMA-Factory config, the real recipes on a
    laptop): transformers refuses it after the model loads, in a traceback; said here in one line."""
    on = [key for key in ("bf16", "pure_bf16", "fp16") if loaded.recipe.train.get(key) is True]
    if on and not gpus:
        key = f"train.{on[0]}"
        raise UserError(f"{loaded.where(key)}: {key} true needs a GPU and this machine has none (transformers "
                        "refuses it): train on the GPU machine, or here with "
                        f"{on[0]}: null under train: in {display(loaded.path)} (as recipes/tiny-answer.yaml has it) "
                        f"or --set {key}=null")


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("orchestrator", "llamafactory", "transformers", "torch", "peft", "trl"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _watch_steps(adapter_dir: Path, stop: threading.Event, stage: str) -> None:
    """A bar of training steps, fed by LLaMA-Factory's trainer_log.jsonl."""
    progress = None
    while not stop.wait(0.5):
        rows = read_trainer_log(adapter_dir)
        if not rows:
            continue
        last = rows[-1]
        if progress is None:
            progress = bar(last.get("total_steps") or None, stage, unit="step")
        progress.n = last.get("current_steps", 0)
        losses = [row["loss"] for row in rows if row.get("loss") is not None]
        if losses:  # the newest logged (the closing row, read in the same poll as the last step's, has none)
            progress.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        progress.refresh()
    if progress is not None:
        progress.close()


def train(loaded: Loaded[RoleRecipe], *, fresh: bool = False, timeout: float | None = None,
          echo: bool = True) -> Trained:
    """`_train` holding the run folder's lock: one training of a role at a time."""
    with run_lock(role_paths(loaded.recipe).run_dir, command_for(loaded, "train")):
        return _train(loaded, fresh=fresh, timeout=timeout, echo=echo)


def _train(
    loaded: Loaded[RoleRecipe],
    *,
    fresh: bool = False,
    timeout: float | None = None,
    echo: bool = True,
) -> Trained:
    """Render and check the configs, then run `llamafactory-cli train`; resume from the last
    checkpoint unless `fresh`; write runs/<name>/manifest.json beside the adapter."""
    paths = check_roles([loaded])[0].paths
    stage = f"train {loaded.recipe.run_name}"
    _preflight(loaded, paths)
    if echo:
        for line in loaded.overridden_lines():
            say(stage, line)

    inputs = training_inputs(loaded, paths)
    ident = value_hash(inputs)  # the training's identity: where it is kept
    finish_moves(paths)
    if is_trained(paths):
        try:
            manifest = read_manifest(paths, loaded.recipe.role) or Manifest()
        except UserError:
            if not fresh:
                raise
            manifest = Manifest(identity=f"unrecorded-{adapter_hash(paths.adapter)}")  # --fresh: kept all the same
        current = manifest.identity
        if current is None:  # recorded before identities: by its inputs, read as they were
            current = ident if _same_training(loaded, paths, manifest, inputs) else value_hash(manifest.inputs)
            manifest = manifest.model_copy(update={
                "identity": current, "inputs": inputs if current == ident else manifest.inputs,
                "adapter_hash": manifest.adapter_hash or adapter_hash(paths.adapter)})
            write_record_file(paths.manifest, manifest)
        if current == ident and not fresh:
            if echo:
                say(stage, f"up to date: {paths.adapter} was trained on the same train.yaml, datasets and base model")
            return Trained(paths, manifest.final_loss, 0.0, None, up_to_date=True)
        kept = keep(paths, current)
        if echo:
            changed = ", ".join(_changed(manifest.inputs, inputs)) or "nothing (--fresh)"
            say(stage, f"{changed} changed since {paths.adapter} was trained: that training is kept in {kept}")
        bound_merged(paths, loaded.recipe.keep.merged, (lambda line: say(stage, line)) if echo else None)
    elif paths.adapter.exists():
        other = recorded_identity(paths.run_dir)
        if other is not None and other != ident:  # another training's checkpoints: kept too
            kept = keep(paths, other)
            if echo:
                say(stage, f"an unfinished training of other inputs is kept in {kept}; it resumes when they come back")
        elif (paths.adapter / ADAPTER_FILE).exists() and other is None:
            # a finished adapter without our manifest: LLaMA-Factory would refuse the non-empty dir
            raise UserError(f"{paths.adapter} holds an adapter this tool did not record: use --fresh to train again")
    if not fresh and not paths.adapter.exists():
        back = entry_dir(paths, ident)
        if back.is_dir():
            restore(paths, ident)
            if finished_in(paths.run_dir):
                if echo:
                    say(stage, f"trained before on these inputs: {paths.adapter} is back from {back}, nothing to train")
                return Trained(paths, _final_loss(paths, loaded), 0.0, None, up_to_date=True)
        elif (elsewhere := find(ident, paths.run_dir)) is not None:
            copy_in(elsewhere, paths)
            if echo:
                say(stage, f"trained before on these inputs in {elsewhere}: linked into {paths.adapter}, nothing to train")
            return Trained(paths, _final_loss(paths, loaded), 0.0, None, up_to_date=True)
    if fresh and paths.adapter.exists():
        shutil.rmtree(paths.adapter)  # (kept above when it was another training's)
    record_start(paths, ident)
    if paths.adapter.exists():
        for moved in set_aside_incomplete(paths.adapter):
            say(stage, f"set aside {moved.name}: its save was interrupted (no trainer_state.json)")
    checkpoint = last_checkpoint(paths.adapter) if paths.adapter.exists() else None
    if checkpoint and echo:
        say(stage, f"resuming from {checkpoint.name}")

    cmd = [cli_path(), "train", str(paths.train_yaml)]
    gpus = visible_gpus()
    _mixed_precision_needs_a_gpu(loaded, gpus)
    # INFO: each process logs its rank and world size, read back into the manifest
    env = {"DISABLE_VERSION_CHECK": "1", "LLAMAFACTORY_VERBOSITY": "INFO", **launch_env(loaded, gpus)}
    launched = launch_line(loaded, gpus)
    if echo:
        say(stage, f"launching {launched}")
        say(stage, f"$ {' '.join(cmd)}   (log: {paths.log})")
    lines: list[str] = []

    def show(line: str) -> None:
        lines.append(line)
        if echo and worth_showing(line):
            say(stage, clean(line))

    stop = threading.Event()
    watcher = threading.Thread(target=_watch_steps, args=(paths.adapter, stop, stage), daemon=True)
    watcher.start()
    started = time.time()
    try:
        finished = run(cmd, stage=stage, log_path=paths.log, env=env, cwd=paths.run_dir, timeout=timeout, on_line=show)
    finally:
        stop.set()
        watcher.join()
    if finished.returncode != 0 or not (paths.adapter / ADAPTER_FILE).exists():
        raise StageFailed(
            f"{stage}: llamafactory-cli train exited with code {finished.returncode}; last lines:",
            *[f"  {line}" for line in finished.tail[-12:]],
            f"rendered config: {paths.train_yaml}; full log: {paths.log}",
        )
    ran = what_ran(lines)
    if ran and ran["node_rank"] > 0:
        # save_on_each_node left this node a copy of the final adapter; rank 0 holds the model
        for name in (ADAPTER_FILE, "adapter_config.json"):
            (paths.adapter / name).unlink(missing_ok=True)
        return Trained(paths, None, finished.seconds, checkpoint.name if checkpoint else None, ran)
    rows = read_trainer_log(paths.adapter)
    losses = [r["loss"] for r in rows if r.get("loss") is not None]
    final_loss = losses[-1] if losses else None
    rewards = preference_rewards(paths.adapter) if loaded.recipe.is_preference else None
    plot = paths.adapter / "training_loss.png"
    write_record_file(paths.manifest, Manifest(
        role=loaded.recipe.role,
        recipe=loaded.raw,
        recipe_file=relative(loaded.path),
        overrides=loaded.overridden(),
        train_yaml=str(paths.train_yaml),
        adapter=str(paths.adapter),
        resumed_from=checkpoint.name if checkpoint else None,
        started=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        seconds=round(finished.seconds, 1),
        steps=rows[-1].get("current_steps") if rows else None,
        final_loss=final_loss,
        rewards=rewards,
        distributed=ran,
        launched=launched,
        loss_plot=str(plot) if plot.exists() else None,
        data=training_data(loaded.recipe),
        inputs=inputs,
        identity=ident,
        adapter_hash=adapter_hash(paths.adapter),
        versions=_versions(),
        git_commit=_git_commit(),
    ))
    return Trained(paths, final_loss, finished.seconds, checkpoint.name if checkpoint else None, ran,
                   rewards=rewards)
