"""Training that scales out, for real on CPU: torchrun's processes with gloo, started by a plain
`.venv/bin/orchestrator` (no activated virtualenv, so no .venv/bin on PATH): 2 processes from
`make answer-model`, and two nodes on loopback (two project copies), interrupted and resumed."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import helpers
from helpers import ADAPTER_ONLY, REPO, with_makefile

pytestmark = pytest.mark.slow

ORCH = str(REPO / ".venv" / "bin" / "orchestrator")


def plain_env(project: Path) -> dict[str, str]:
    """The environment of a shell that never activated the virtualenv."""
    venv_bin = str(REPO / ".venv" / "bin")
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.abspath(p) != venv_bin]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CUDA_VISIBLE_DEVICES")}
    return {**env, "PATH": os.pathsep.join(path), "ORCHESTRATOR_HOME": str(project)}


def make(project: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return helpers.make(project, *args, timeout=timeout, environ=plain_env(project))


def set_recipe(project: Path, old: str, new: str) -> None:
    path = project / "recipes" / "tiny-answer.yaml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))


def test_make_answer_model_trains_with_2_processes(tiny_project: Path) -> None:
    """What docs/scaling.md's "Several GPUs, one machine" runs, on CPU: `gpus_per_node: 2` is 2 gloo processes."""
    assert shutil.which("torchrun", path=plain_env(tiny_project)["PATH"]) is None  # the failure, if unfixed
    with_makefile(tiny_project)
    set_recipe(tiny_project, "max_steps: 60", "max_steps: 8")
    set_recipe(tiny_project, "save_steps: 30", "save_steps: 4")
    # the adapter ends the model: a merge is the same after 2 processes as after 1 (not the subject)
    set_recipe(tiny_project, *ADAPTER_ONLY)
    (tiny_project / "recipes" / "tiny-answer.yaml").write_text(
        (tiny_project / "recipes" / "tiny-answer.yaml").read_text() + "\ndistributed:\n  gpus_per_node: 2\n")

    done = make(tiny_project, "answer-model", "RECIPE=tiny")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "[train tiny-answer] launching 2 processes on CPU (gloo; no GPU here)" in done.stderr
    manifest = json.loads((tiny_project / "runs/tiny-answer/manifest.json").read_text())
    assert manifest["distributed"] == {"world_size": 2, "nnodes": 1, "nproc_per_node": 2, "node_rank": 0,
                                       "backend": "gloo"}
    assert "world size 2 (1 node(s) x 2 process(es), gloo)" in done.stdout
    assert "orchestrator merge" not in done.stdout and not (tiny_project / "runs/tiny-answer/merged").exists()
    # the data was split between the two: an epoch is ceil(ceil(samples / 2) / 4) steps of batch 4
    state = json.loads((tiny_project / "runs/tiny-answer/adapter/trainer_state.json").read_text())
    samples = len(json.loads((tiny_project / "datasets/train_answer_instruct.json").read_text()))
    assert state["epoch"] == pytest.approx(8 / math.ceil(math.ceil(samples / 2) / 4))


def start_node(project: Path, rank: int, port: int) -> subprocess.Popen:
    sets = ["distributed.nnodes=2", f"distributed.node_rank={rank}", "distributed.master_addr=127.0.0.1",
            f"distributed.master_port={port}", "train.max_steps=16", "train.save_steps=4",
            "name=tiny-answer"]  # (named on the command line: the recipe's own run folder, not a variant's)
    cmd = [ORCH, "train", "answer", "--recipe", "recipes/tiny-answer.yaml", *[a for s in sets for a in ("--set", s)]]
    return subprocess.Popen(cmd, cwd=project, env=plain_env(project), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def saved(project: Path, step: int) -> bool:
    return (project / f"runs/tiny-answer/adapter/checkpoint-{step}/trainer_state.json").exists()


def test_two_nodes_on_loopback_interrupted_then_resumed(tiny_project: Path,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    from orchestrator.core.common.process import free_port

    node0 = with_makefile(tiny_project)
    built = subprocess.run([ORCH, "run", "dataset-answer", "RECIPE=tiny"], cwd=node0, env=plain_env(node0),
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    node1 = tmp_path_factory.mktemp("node1")
    shutil.copytree(node0, node1, symlinks=True, dirs_exist_ok=True)  # the second machine's own copy of the project
    port = free_port()

    nodes = [start_node(node0, 0, port), start_node(node1, 1, port)]
    deadline = time.monotonic() + 600
    while not (saved(node0, 4) and saved(node1, 4)):  # each node keeps its own checkpoints
        assert all(n.poll() is None for n in nodes), [n.communicate()[0][-3000:] for n in nodes]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    nodes[1].send_signal(signal.SIGTERM)  # one node goes down: both stop
    outs = [n.communicate(timeout=300)[0] for n in nodes]
    assert nodes[1].returncode != 0 and nodes[0].returncode != 0, outs
    assert not (node0 / "runs/tiny-answer/manifest.json").exists()

    nodes = [start_node(node0, 0, port), start_node(node1, 1, port)]
    outs = [n.communicate(timeout=900)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], [out[-3000:] for out in outs]
    for out in outs:
        assert "resuming from checkpoint-" in out

    manifest = json.loads((node0 / "runs/tiny-answer/manifest.json").read_text())
    assert manifest["distributed"] == {"world_size": 2, "nnodes": 2, "nproc_per_node": 1, "node_rank": 0,
                                       "backend": "gloo"}
    assert manifest["resumed_from"].startswith("checkpoint-") and manifest["steps"] == 16
    assert (node0 / "runs/tiny-answer/adapter/adapter_model.safetensors").exists()
    assert "rank 0 (node 0, 127.0.0.1) saved the model in its runs/tiny-answer/adapter" in outs[1]
    assert "world size 2 (2 node(s) x 1 process(es), gloo), node rank 1" in outs[1]
    assert not (node1 / "runs/tiny-answer/manifest.json").exists()
    assert not (node1 / "runs/tiny-answer/adapter/adapter_model.safetensors").exists()
