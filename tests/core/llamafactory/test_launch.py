"""The launch of a training across processes and nodes: LLaMA-Factory's launcher variables,
the machine checks, the extras a recipe needs, and what a launch did, read from its log."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from orchestrator.core.common.errors import UserError
from orchestrator.core.llamafactory.launch import (
    CPU_DDP,
    HIDDEN_ENV,
    QUANTIZATION_PACKAGES,
    describe,
    launch_env,
    launch_line,
    missing_extras,
    no_gpu_env,
    visible_gpus,
    what_ran,
)
from orchestrator.core.recipes.loading import load_role

EIGHT = [str(i) for i in range(8)]
CLUSTER = ["distributed.gpus_per_node=8", "distributed.nnodes=2", "distributed.node_rank=1",
           "distributed.master_addr=10.0.0.1", "distributed.master_port=29501"]

LAUNCH = [
    # (overrides, the GPUs the machine shows, expected environment)
    pytest.param([], EIGHT, {"NPROC_PER_NODE": "1"}, id="one-process"),  # not torchrun on all 8
    pytest.param(["distributed.gpus_per_node=8"], EIGHT, {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "8"}, id="8-gpus"),
    pytest.param(["distributed.gpus_per_node=2"], [], {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2",
                                                       "PYTHONPATH": CPU_DDP, HIDDEN_ENV: "gptqmodel,bitsandbytes"},
                 id="2-cpu-procs"),
    pytest.param([], [], {"NPROC_PER_NODE": "1", "PYTHONPATH": CPU_DDP, HIDDEN_ENV: "gptqmodel,bitsandbytes"},
                 id="1-cpu-process"),
    pytest.param(["train.quantization_bit=4"], [], {"NPROC_PER_NODE": "1", "PYTHONPATH": CPU_DDP}, id="qlora-on-cpu"),
    pytest.param(["model.path=models/Qwen2.5-32B-Instruct-GPTQ-Int4"], [], {"NPROC_PER_NODE": "1", "PYTHONPATH": CPU_DDP},
                 id="gptq-base-on-cpu"),
    pytest.param(["merge.export_quantization_bit=4"], [], {"NPROC_PER_NODE": "1", "PYTHONPATH": CPU_DDP},
                 id="gptq-export-on-cpu"),
    pytest.param(
        [*CLUSTER, "distributed.deepspeed=3"], EIGHT,
        {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "8", "NNODES": "2", "NODE_RANK": "1",
         "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29501"}, id="2-nodes-zero3",
    ),
    pytest.param(["distributed.ray_workers=4"], EIGHT, {"USE_RAY": "1"}, id="ray"),
]


@pytest.mark.parametrize("overrides, gpus, env", LAUNCH)
def test_launch_environment(project: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str], gpus: list[str], env: dict[str, str]) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)
    assert launch_env(load_role("answer", None, overrides), gpus) == env


def test_cpu_processes_resume_an_optimizer_saved_on_cpu(tmp_path: Path) -> None:
    """What transformers does when it resumes a CPU DDP run, with the launch's PYTHONPATH."""
    import subprocess
    import sys

    code = ("import torch; torch.save({'a': torch.ones(2)}, 'o.pt'); "
            "print(torch.load('o.pt', map_location=torch.device('cpu', 1))['a'].sum().item())")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": CPU_DDP})
    assert done.stdout.strip() == "2.0", done.stderr[-2000:]


def test_a_hidden_module_is_not_installed_for_the_process() -> None:
    """What peft asks (importlib.util.find_spec) before it imports gptqmodel or bitsandbytes, in a
    process started with the environment of a model that quantizes nothing; yaml stands for a
    package surely installed here."""
    import subprocess
    import sys

    hidden = (*QUANTIZATION_PACKAGES, "yaml")
    code = ("import importlib.util, sys\n"
            f"for name in {list(hidden)!r}:\n"
            "    assert importlib.util.find_spec(name) is None, name\n"
            "    try:\n        __import__(name)\n    except ImportError:\n        pass\n"
            "    else:\n        sys.exit(name + ' imported')\n"
            "print('hidden')")
    env = {**os.environ, **no_gpu_env([], quantized=False), HIDDEN_ENV: ",".join(hidden)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.stdout.strip() == "hidden", done.stderr[-2000:]
    assert HIDDEN_ENV not in no_gpu_env([])  # a quantized model's processes see every package


REFUSED = [
    # (overrides, CUDA_VISIBLE_DEVICES or None, the GPUs shown, the one Error line)
    pytest.param(["distributed.ray_workers=2"], None, [],
                 "--set: distributed.ray_workers is 2 but this machine shows no GPU: LLaMA-Factory's Ray path "
                 "reserves a GPU (and 10 CPUs) per worker and would wait forever; set it to 0 and use "
                 "distributed.gpus_per_node for CPU processes", id="ray-on-cpu"),
    pytest.param(["distributed.gpus_per_node=2"], "3", ["3"],
                 "--set: distributed.gpus_per_node is 2 but CUDA_VISIBLE_DEVICES=3 lists 1 GPU(s); list at least "
                 "2 devices or lower gpus_per_node", id="visible-devices-short"),
    pytest.param(["distributed.gpus_per_node=8"], None, ["0", "1"],
                 "--set: distributed.gpus_per_node is 8 but this machine has 2 GPU(s); list at least 8 devices "
                 "or lower gpus_per_node", id="machine-short"),
]


@pytest.mark.parametrize("overrides, visible, gpus, error", REFUSED)
def test_launch_refused_in_one_line(project: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str],
                                    visible: str | None, gpus: list[str], error: str) -> None:
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(UserError) as info:
        launch_env(load_role("answer", None, overrides), gpus)
    assert info.value.lines == [error]


@pytest.mark.parametrize("visible, listed", [("0,1", ["0", "1"]), ("", []), (" 2 , 5,", ["2", "5"])])
def test_users_visible_devices_are_what_a_launch_sees(monkeypatch: pytest.MonkeyPatch, visible: str,
                                                      listed: list[str]) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert visible_gpus() == listed


def test_user_visible_devices_are_kept(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    env = launch_env(load_role("answer", None, ["distributed.gpus_per_node=2"]))
    assert "CUDA_VISIBLE_DEVICES" not in env  # the subprocess inherits the user's 4,5


@pytest.mark.parametrize("overrides, gpus, line", [
    (["distributed.gpus_per_node=2"], [], "2 processes on CPU (gloo; no GPU here)"),
    ([], ["0", "1", "2"], "1 process on GPU 0 (1 of the 3 visible: distributed.gpus_per_node 1)"),
    ([], [], "1 process on CPU (no GPU here)"),
    (["distributed.gpus_per_node=2"], ["4", "5", "6"], "2 processes on GPU(s) 4,5 (nccl)"),
    (CLUSTER, EIGHT, "8 processes on GPU(s) 0,1,2,3,4,5,6,7 (nccl), node 1 of 2 (rank 0 at 10.0.0.1:29501)"),
])
def test_launch_line(project: Path, overrides: list[str], gpus: list[str], line: str) -> None:
    assert launch_line(load_role("answer", None, overrides), gpus) == line


@pytest.mark.parametrize("key, module, how", [
    ("distributed.deepspeed", "deepspeed", "pip install -e '.[deepspeed]'"),
    ("distributed.ray_workers", "ray", "pip install -e '.[ray]'"),
    ("train.quantization_bit", "bitsandbytes", "make setup-quant"),
    ("merge.export_quantization_bit", "gptqmodel", "make setup-quant"),
])
def test_missing_extra_named(project: Path, key: str, module: str, how: str, monkeypatch) -> None:
    loaded = load_role("answer", None, [f"{key}={4 if 'quantization' in key else 3}"])
    installed = importlib.util.find_spec(module) is not None
    expected = [] if installed else [f"--set: {key} needs the {module} package, not installed here: {how}"]
    assert missing_extras(loaded) == expected
    assert missing_extras(load_role("answer")) == []
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    assert missing_extras(loaded) == [f"--set: {key} needs the {module} package, not installed here: {how}"]


def test_check_names_the_missing_extra(project: Path, cli) -> None:
    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    (project / "recipes" / "zero3.yaml").write_text("extends: answer.yaml\ndistributed:\n  gpus_per_node: 8\n  deepspeed: 3\n")
    code, _, err = cli("check", "answer", "--recipe", "recipes/zero3.yaml")
    assert code == 2
    assert err == ("Error: recipes/zero3.yaml: distributed.deepspeed needs the deepspeed package, not installed here: "
                   "pip install -e '.[deepspeed]'\n")


def rank_line(rank: int, world: int, device: str) -> str:
    return (f"[INFO|2026-12-01 09:43:15] llamafactory.hparams.parser:523 >> Process rank: {rank}, world size: {world}, "
            f"device: {device}, distributed training: {world > 1}, compute dtype: None")


WHAT_RAN = [
    # (this node's log lines, the record)
    pytest.param([rank_line(0, 1, "cpu")], {"world_size": 1, "nnodes": 1, "nproc_per_node": 1, "node_rank": 0,
                                            "backend": None}, id="one-process"),
    pytest.param(["noise", rank_line(1, 2, "cpu:0"), rank_line(0, 2, "cpu:0")],
                 {"world_size": 2, "nnodes": 1, "nproc_per_node": 2, "node_rank": 0, "backend": "gloo"}, id="2-cpu"),
    pytest.param([rank_line(r, 16, f"cuda:{r - 8}") for r in range(8, 16)],
                 {"world_size": 16, "nnodes": 2, "nproc_per_node": 8, "node_rank": 1, "backend": "nccl"},
                 id="second-of-2-nodes-x-8"),
    pytest.param(["no rank lines at all"], None, id="nothing-logged"),
]


@pytest.mark.parametrize("lines, record", WHAT_RAN)
def test_what_ran_is_read_from_the_log(lines: list[str], record: dict | None) -> None:
    assert what_ran(lines) == record


def test_describe() -> None:
    ran = what_ran([rank_line(r, 16, "cuda:0") for r in range(8)])
    assert ran is not None
    assert describe(ran) == "world size 16 (2 node(s) x 8 process(es), nccl), node rank 0"


# LLaMA-Factory's device count made to read 4 (no GPU here), in the launcher's own process
FOUR_DEVICES = '''
import importlib.abc, importlib.util, sys

class FourDevices(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "llamafactory.extras.misc":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.get_device_count = lambda: 4
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, FourDevices())
'''


@pytest.mark.slow
def test_one_process_on_a_machine_llamafactory_counts_four_devices_on(project: Path, tmp_path: Path) -> None:
    """The real launcher, a stand-in torchrun noting what it was asked: without NPROC_PER_NODE it
    would start one process per device it counts; gpus_per_node 1 makes it one."""
    import subprocess

    from orchestrator.core.llamafactory.launch import cli_path

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(FOUR_DEVICES)
    (tmp_path / "bin").mkdir()
    torchrun = tmp_path / "bin" / "torchrun"
    torchrun.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/torchrun-args\n")
    torchrun.chmod(0o755)
    base = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(tmp_path / "site"), "DISABLE_VERSION_CHECK": "1"}
    base.pop("NPROC_PER_NODE", None)
    asked = []
    for env in ({}, launch_env(load_role("answer"), ["0", "1", "2", "3"])):
        done = subprocess.run([cli_path(), "train", "train.yaml"], env={**base, **env}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        args = (tmp_path / "torchrun-args").read_text().split()
        asked.append(args[args.index("--nproc_per_node") + 1])
    assert asked == ["4", "1"]  # LLaMA-Factory's own default, then ours
    assert launch_line(load_role("answer"), ["0", "1", "2", "3"]) == (
        "1 process on GPU 0 (1 of the 4 visible: distributed.gpus_per_node 1)")
