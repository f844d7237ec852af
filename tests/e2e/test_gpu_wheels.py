"""benchmarks/gpu_wheels.py (`make gpu-wheels`): the wheels the GPU check carries, built as make
builds them (once per machine, in ~/.cache/orchestrator/gpu-wheels), resolved offline by pip for
the lent machine's Python 3.12 against its own packages; a wheel taken out fails the resolution
here, naming what is missing, not on the lent machine."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("gpu-wheels")]  # downloads the set once per machine; one build


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_wheels", REPO / "benchmarks" / "gpu_wheels.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_wheels = _module()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The carried set as `make gpu-wheels` writes it (the command it runs, into a folder of the test's)."""
    dest = tmp_path_factory.mktemp("gpu-wheels") / "wheels"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_wheels.py"), "build", str(dest)],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resolved offline for Python 3.12" in done.stdout
    return dest


def test_the_set_carries_llamafactorys_versions_and_the_gptq_packages_within_the_budget(wheels: Path) -> None:
    lines = gpu_wheels.check(wheels)
    carried = lines[1]
    for pin in ("llamafactory 0.9.5", "transformers 5.6.0", "peft 0.18.1", "accelerate 1.11.0", "tokenizers 0.22.2",
                "huggingface-hub 1.33.0", "safetensors 0.8.0", "gptqmodel 7.2.0", "optimum 2.3.0", "pypcre 0.6.4"):
        assert pin in carried, carried
    assert "torch 2.11.0" in lines[2]  # the machine's own, stood in for
    assert any(line.startswith("not carried: bitsandbytes") for line in lines)
    assert sum(p.stat().st_size for p in wheels.glob("*.whl")) <= gpu_wheels.BUDGET_MIB * 2**20
    assert [p.name for p in wheels.glob("pypcre-*")] == ["pypcre-0.6.4-cp312-cp312-linux_x86_64.whl"]


def _without(wheels: Path, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "wheels"
    shutil.copytree(wheels, folder)
    removed = [p for p in folder.glob("*.whl") if gpu_wheels.canonical(p.name.split("-", 1)[0]) == name]
    assert len(removed) == 1, name
    removed[0].unlink()
    return folder


@pytest.mark.parametrize(("removed", "said"), [
    ("accelerate", "accelerate"),  # the machine's 1.15.0 is above LLaMA-Factory 0.9.5's <=1.11.0
    ("tokenizers", "tokenizers"),  # the machine's 0.23.2 is above transformers 5.6.0's <=0.23.0
    ("pydantic-core", "pydantic-core"),  # a binary wheel the machine lacks
    ("pypcre", "pypcre"),  # built here with a Python 3.12: gptqmodel's tokenicer and defuser need it
    ("gptqmodel", "lacks gptqmodel: the GPU check's quantized step needs them"),
])
def test_a_wheel_taken_out_fails_the_resolution_naming_it(wheels: Path, tmp_path: Path, removed: str, said: str) -> None:
    with pytest.raises(gpu_wheels.Unresolved) as failed:
        gpu_wheels.check(_without(wheels, tmp_path, removed))
    assert said in str(failed.value)


def test_two_versions_of_one_package_and_a_wheel_nothing_needs_are_refused(wheels: Path, tmp_path: Path) -> None:
    folder = tmp_path / "wheels"
    shutil.copytree(wheels, folder)
    second = gpu_wheels.placeholder(folder, "transformers", "5.17.0")
    with pytest.raises(gpu_wheels.Unresolved, match="two versions of one package"):
        gpu_wheels.check(folder)
    second.unlink()
    gpu_wheels.placeholder(folder, "left-pad", "1.0")
    with pytest.raises(gpu_wheels.Unresolved, match="carried but needed by nothing the GPU check runs: left-pad"):
        gpu_wheels.check(folder)


def test_the_command_fails_with_one_error_line(wheels: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_wheels.py"), "check",
                           str(_without(wheels, tmp_path, "transformers"))], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: the carried wheels and the machine's packages do not meet every requirement")
    assert "transformers" in done.stderr
