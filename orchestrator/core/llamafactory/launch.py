"""How a training is launched across processes and nodes: LLaMA-Factory's launcher variables
(launcher.py: FORCE_TORCHRUN, NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT,
USE_RAY) for the recipe's `distributed:` section, checked against this machine; the optional
extras a recipe needs; and what a launch did, read back from the training's own log."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import RoleRecipe


CPU_DDP = str(Path(__file__).parent / "cpu_ddp")


def visible_gpus() -> list[str]:
    """The GPUs a training started here sees: CUDA_VISIBLE_DEVICES when set (kept as the
    user set it), else the ones `nvidia-smi -L` lists; none without a driver."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in out.splitlines() if line.startswith("GPU "))]


def no_gpu_env(gpus: list[str] | None = None) -> dict[str, str]:
    """For a process started on a machine that shows no GPU (default: this one): cpu_ddp/ first on
    PYTHONPATH, whose sitecustomize.py fixes what a CUDA-built torch gets wrong there (resuming
    CPU processes, gptqmodel's kernel choice). Nothing on a machine with a GPU."""
    if visible_gpus() if gpus is None else gpus:
        return {}
    return {"PYTHONPATH": os.pathsep.join([CPU_DDP, *filter(None, [os.environ.get("PYTHONPATH")])])}


SETUP_QUANT = "make setup-quant"  # the quantization packages (requirements-quant.txt)


def _bnb(recipe: RoleRecipe) -> bool:
    return bool(recipe.train.get("quantization_bit")) and recipe.train.get("quantization_method") in (None, "bnb")


# recipe key -> (the test that it is used, the module it needs, what installs it)
EXTRAS = {
    "distributed.deepspeed": (lambda r: r.distributed.deepspeed > 0, "deepspeed", "pip install -e '.[deepspeed]'"),
    "distributed.ray_workers": (lambda r: r.distributed.ray_workers > 0, "ray", "pip install -e '.[ray]'"),
    "train.quantization_bit": (_bnb, "bitsandbytes", SETUP_QUANT),  # QLoRA
    "merge.export_quantization_bit": (lambda r: bool(r.merge.get("export_quantization_bit")), "gptqmodel", SETUP_QUANT),
}


def missing_extras(loaded: Loaded[RoleRecipe]) -> list[str]:
    """One problem per optional extra the recipe needs and this environment lacks."""
    problems = []
    for key, (used, module, how) in EXTRAS.items():
        if used(loaded.recipe) and importlib.util.find_spec(module) is None:
            problems.append(f"{loaded.where(key)}: {key} needs the {module} package, not installed here: {how}")
    return problems


def launch_env(loaded: Loaded[RoleRecipe], gpus: list[str] | None = None) -> dict[str, str]:
    """The launcher variables for the recipe, on a machine that shows `gpus` (default: this
    one's). A user's CUDA_VISIBLE_DEVICES is never touched; without GPUs, `gpus_per_node: N`
    launches N CPU processes (gloo)."""
    ds = loaded.recipe.distributed
    gpus = visible_gpus() if gpus is None else gpus
    if ds.ray_workers:
        if not gpus:
            raise UserError(
                f"{loaded.where('distributed.ray_workers')}: distributed.ray_workers is {ds.ray_workers} but this "
                "machine shows no GPU: LLaMA-Factory's Ray path reserves a GPU (and 10 CPUs) per worker and would "
                "wait forever; set it to 0 and use distributed.gpus_per_node for CPU processes"
            )
        return {"USE_RAY": "1"}
    # gpus_per_node 1 is one process: LLaMA-Factory's launcher would otherwise start torchrun
    # with a process per visible GPU (NPROC_PER_NODE defaults to its device count)
    env: dict[str, str] = {"NPROC_PER_NODE": "1"}
    if ds.gpus_per_node > 1 or ds.nnodes > 1 or ds.deepspeed:
        if gpus and len(gpus) < ds.gpus_per_node:
            source = (f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']} lists"
                      if "CUDA_VISIBLE_DEVICES" in os.environ else "this machine has")
            raise UserError(
                f"{loaded.where('distributed.gpus_per_node')}: distributed.gpus_per_node is {ds.gpus_per_node} but "
                f"{source} {len(gpus)} GPU(s); list at least {ds.gpus_per_node} devices or lower gpus_per_node"
            )
        env["FORCE_TORCHRUN"] = "1"
        env["NPROC_PER_NODE"] = str(ds.gpus_per_node)
        if not gpus:  # CPU processes: see cpu_ddp/sitecustomize.py (resuming them fails without it)
            env.update(no_gpu_env(gpus))
    if ds.nnodes > 1:
        env.update(
            NNODES=str(ds.nnodes),
            NODE_RANK=str(ds.node_rank),
            MASTER_ADDR=ds.master_addr,
            MASTER_PORT=str(ds.master_port),
        )
    return env


def launch_line(loaded: Loaded[RoleRecipe], gpus: list[str]) -> str:
    """What a launch starts, in words: the start line of `train`."""
    ds = loaded.recipe.distributed
    if ds.ray_workers:
        return f"{ds.ray_workers} Ray workers"
    n = ds.gpus_per_node
    if not gpus:
        where = "on CPU (gloo; no GPU here)" if n > 1 else "on CPU (no GPU here)"
    elif n == 1:
        where = f"on GPU {gpus[0]}" + (f" (1 of the {len(gpus)} visible: distributed.gpus_per_node 1)" if len(gpus) > 1 else "")
    else:
        where = f"on GPU(s) {','.join(gpus[:n])} (nccl)"
    line = f"{n} process{'es' if n > 1 else ''} {where}"
    if ds.nnodes > 1:
        line += f", node {ds.node_rank} of {ds.nnodes} (rank 0 at {ds.master_addr}:{ds.master_port})"
    return line


# LLaMA-Factory's parser logs this on every process (hparams/parser.py, get_train_args)
_PROCESS = re.compile(r"Process rank: (\d+), world size: (\d+), device: ([a-z]+)")
# torch.distributed's default backend for each device torchrun's processes ran on
BACKENDS = {"cpu": "gloo", "cuda": "nccl", "npu": "hccl", "xpu": "xccl", "mps": "gloo"}


def what_ran(lines: Iterable[str]) -> dict[str, Any] | None:
    """The launch as the training's processes reported it (their `Process rank: R, world size:
    W, device: D` lines), or None when the log holds none. With torchrun's static rendezvous a
    node's processes hold the global ranks node_rank * nproc_per_node + local rank."""
    ranks: dict[int, tuple[int, str]] = {}
    for line in lines:
        if m := _PROCESS.search(line):
            ranks[int(m.group(1))] = (int(m.group(2)), m.group(3))
    if not ranks:
        return None
    world_size, device = ranks[min(ranks)]
    nproc = len(ranks)
    return {
        "world_size": world_size,
        "nnodes": world_size // nproc,
        "nproc_per_node": nproc,
        "node_rank": min(ranks) // nproc,
        "backend": BACKENDS.get(device, device) if world_size > 1 else None,
    }


def describe(ran: dict[str, Any]) -> str:
    """A manifest's `distributed` record in words, for the summary."""
    if ran["world_size"] == 1:
        return "world size 1 (one process)"
    return (f"world size {ran['world_size']} ({ran['nnodes']} node(s) x {ran['nproc_per_node']} process(es), "
            f"{ran['backend']}), node rank {ran['node_rank']}")


def cli_path() -> str:
    """`llamafactory-cli` of this Python environment."""
    beside = Path(sys.executable).parent / "llamafactory-cli"
    if beside.exists():
        return str(beside)
    found = shutil.which("llamafactory-cli")
    if not found:
        raise UserError("llamafactory-cli is not installed in this environment: run `make setup`")
    return found
