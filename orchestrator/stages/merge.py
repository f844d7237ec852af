"""Stage: merge a role's adapter into its base model with `llamafactory-cli export`.

The export goes to a temporary folder renamed to runs/<name>/merged/ only on success, so a
half-written model is never taken as done."""

from __future__ import annotations

import shutil
from pathlib import Path

from orchestrator.core.role_configs import check_roles
from orchestrator.core.errors import StageFailed, UserError
from orchestrator.core.files import atomic_write_json, atomic_write_jsonl
from orchestrator.core.llamafactory import ADAPTER_FILE, calibration_texts, cli_path, is_trained
from orchestrator.core.process import run
from orchestrator.core.progress import clean, say, worth_showing
from orchestrator.core.recipes import Loaded, RoleRecipe, command_for


def needs_calibration(loaded: Loaded[RoleRecipe]) -> bool:
    """A quantized export: it needs calibration data (the pipeline recipe's data.train)."""
    return bool(loaded.recipe.merge.get("export_quantization_bit"))


def merge(
    loaded: Loaded[RoleRecipe],
    *,
    calibration_data: str | Path | None = None,
    timeout: float | None = None,
    echo: bool = True,
) -> Path:
    paths = check_roles([loaded])[0].paths
    stage = f"merge {loaded.recipe.run_name}"
    if not is_trained(paths):
        what = "an unfinished training" if paths.adapter.exists() else "no trained adapter"
        raise UserError(
            f"{paths.adapter} has {what} (no {ADAPTER_FILE}): run `{command_for(loaded, 'train')}` first"
        )
    if needs_calibration(loaded):
        from orchestrator.core.competition import read_dataset

        if calibration_data is None:
            raise UserError(f"{loaded.where('merge')}: a quantized export needs calibration_data (data.train)")
        source = calibration_data
        maxlen = int(loaded.recipe.merge.get("export_quantization_maxlen") or 1024)
        atomic_write_jsonl(paths.calibration, calibration_texts(read_dataset(source).questions, maxlen))

    tmp = paths.run_dir / ".merged.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [cli_path(), "export", str(paths.merge_yaml), f"export_dir={tmp}"]
    log = paths.run_dir / "merge.log"
    env = {"DISABLE_VERSION_CHECK": "1"}
    if loaded.recipe.merge.get("export_device") == "cpu":
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
    if finished.returncode != 0 or not (tmp / "config.json").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        raise StageFailed(
            f"{stage}: llamafactory-cli export exited with code {finished.returncode}; last lines:",
            *[f"  {line}" for line in finished.tail[-12:]],
            f"rendered config: {paths.merge_yaml}; full log: {log}",
        )
    atomic_write_json(
        tmp / "orchestrator.json",
        {"role": loaded.recipe.role, "adapter": str(paths.adapter), "merge_yaml": str(paths.merge_yaml), "seconds": round(finished.seconds, 1)},
    )
    old = paths.run_dir / ".merged.old"
    shutil.rmtree(old, ignore_errors=True)
    if paths.merged.exists():
        paths.merged.rename(old)
    tmp.rename(paths.merged)
    shutil.rmtree(old, ignore_errors=True)
    return paths.merged
