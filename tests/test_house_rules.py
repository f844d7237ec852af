"""The house rules `make test` checks before the tests: ruff, mypy and the one-way imports
(cli -> stages -> core). Each check really fails on a violation, and fails `make test`."""

from __future__ import annotations

import copy
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # requires-python is >=3.10; the test extra installs tomli there
    tomllib = pytest.importorskip("tomli")

BIN = REPO / ".venv" / "bin"


def copy_project(tmp_path: Path) -> Path:
    """The package, its tests' config and the Makefile in a throwaway folder."""
    shutil.copytree(REPO / "orchestrator", tmp_path / "orchestrator", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "Makefile"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def run(project: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=300, env=env)


def test_make_test_runs_the_checks_before_the_tests() -> None:
    plan = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    steps = [line.split()[0].rsplit("/", 1)[-1] for line in plan.splitlines() if line.startswith(".venv/bin/")]
    assert steps[-4:] == ["ruff", "mypy", "lint-imports", "python"]


UPWARD = [
    pytest.param("dataset.py", "from orchestrator import distill  # noqa: F401\n",
                 "orchestrator.dataset is not allowed to import orchestrator.distill", id="stage-imports-stage"),
    pytest.param("recipes.py", "from orchestrator import train  # noqa: F401\n",
                 "orchestrator.recipes is not allowed to import orchestrator.train", id="core-imports-stage"),
    pytest.param("process.py", "import click  # noqa: F401\n",
                 "orchestrator.process is not allowed to import click", id="core-imports-click"),
]


@pytest.mark.parametrize("module, line, message", UPWARD)
def test_the_import_contract_refuses_an_upward_import(tmp_path: Path, module: str, line: str, message: str) -> None:
    project = copy_project(tmp_path)
    assert run(project, str(BIN / "lint-imports"), "--no-cache").returncode == 0
    path = project / "orchestrator" / module
    path.write_text(path.read_text(encoding="utf-8") + line, encoding="utf-8")
    result = run(project, str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 1 and message in result.stdout


def test_make_test_fails_on_a_lint_error_before_running_the_tests(tmp_path: Path) -> None:
    if not (BIN.parent / ".installed").exists():
        pytest.skip("no install stamp: make would install into the venv")
    project = copy_project(tmp_path)
    (project / ".venv").symlink_to(REPO / ".venv")
    os.utime(project / "pyproject.toml", (0, 0))  # older than the install stamp: no reinstall
    (project / "orchestrator" / "bad.py").write_text("import os\n", encoding="utf-8")  # F401
    result = run(project, "make", "--no-print-directory", "test")
    assert result.returncode != 0
    assert "F401" in result.stdout and "pytest" not in result.stdout


# ---------------------------------------------------------------- every module is checked

def package_modules() -> set[str]:
    """The modules (and subpackages) directly under orchestrator/, as the contracts name them."""
    return {m.name for m in pkgutil.iter_modules([str(REPO / "orchestrator")])}


def module_list_problems(pyproject: dict[str, Any], modules: set[str]) -> list[str]:
    """Why `pyproject`'s module lists miss or disagree with `modules`: each module in exactly one
    layer of the layers contract; the core (last) layer's modules are the click contract's
    source_modules; mypy checks untyped bodies everywhere, or of exactly the core modules."""
    contracts = pyproject["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    layered = [set(filter(None, re.split(r"\s*[|:]\s*", layer.strip()))) for layer in layers]
    problems = []
    for name in sorted(modules):
        count = sum(name in layer for layer in layered)
        if count != 1:
            problems.append(f"orchestrator.{name} is in {count} layers of the import contract, not 1")
    for name in sorted(set().union(*layered) - modules):
        problems.append(f"the import contract names orchestrator.{name}, which does not exist")

    core = {f"orchestrator.{name}" for name in layered[-1]}
    click = next(c for c in contracts if c["type"] == "forbidden" and "click" in c["forbidden_modules"])
    if set(click["source_modules"]) != core:
        problems.append(f"the click contract's source_modules differ from the core layer by "
                        f"{sorted(set(click['source_modules']) ^ core)}")

    mypy = pyproject["tool"]["mypy"]
    if not mypy.get("check_untyped_defs"):
        listed = {m for o in mypy.get("overrides", []) if o.get("check_untyped_defs") for m in o["module"]}
        if listed != core:
            problems.append(f"mypy's check_untyped_defs modules differ from the core layer by {sorted(listed ^ core)}")
    return problems


def read_pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_module_is_in_one_layer_and_the_core_lists_agree() -> None:
    assert "infer" in package_modules() and "__main__" in package_modules()
    assert module_list_problems(read_pyproject(), package_modules()) == []


def _layers(pyproject: dict[str, Any]) -> list[str]:
    return next(c for c in pyproject["tool"]["importlinter"]["contracts"] if c["type"] == "layers")["layers"]


def _click_sources(pyproject: dict[str, Any]) -> list[str]:
    return next(c for c in pyproject["tool"]["importlinter"]["contracts"] if c["type"] == "forbidden")["source_modules"]


def add_module(pyproject: dict[str, Any], modules: set[str]) -> None:
    modules.add("brand_new")  # a new file nobody listed


def remove_module(pyproject: dict[str, Any], modules: set[str]) -> None:
    modules.discard("stats")  # a deleted file still listed


def errors_also_a_stage(pyproject: dict[str, Any], modules: set[str]) -> None:
    layers = _layers(pyproject)
    layers[2] += " | errors"


def click_contract_without_ledger(pyproject: dict[str, Any], modules: set[str]) -> None:
    _click_sources(pyproject).remove("orchestrator.ledger")


def core_layer_without_ledger(pyproject: dict[str, Any], modules: set[str]) -> None:
    layers = _layers(pyproject)
    layers[-1] = " : ".join(m for m in layers[-1].split(" : ") if m != "ledger")


def mypy_core_list(pyproject: dict[str, Any], modules: set[str], drop: str | None = None) -> None:
    """mypy as it was: check_untyped_defs for a list of the core modules only."""
    mypy = pyproject["tool"]["mypy"]
    del mypy["check_untyped_defs"]
    mypy["overrides"].append({"module": [m for m in _click_sources(pyproject) if m != drop], "check_untyped_defs": True})


MISSING = [
    pytest.param(add_module, ["orchestrator.brand_new is in 0 layers"], id="new-module"),
    pytest.param(remove_module, ["the import contract names orchestrator.stats, which does not exist"],
                 id="removed-module"),
    pytest.param(errors_also_a_stage, ["orchestrator.errors is in 2 layers"], id="in-two-layers"),
    pytest.param(click_contract_without_ledger,
                 ["click contract's source_modules differ from the core layer by ['orchestrator.ledger']"],
                 id="click-contract-misses-one"),
    pytest.param(core_layer_without_ledger,
                 ["orchestrator.ledger is in 0 layers",
                  "click contract's source_modules differ from the core layer by ['orchestrator.ledger']"],
                 id="core-layer-misses-one"),
    pytest.param(mypy_core_list, [], id="mypy-core-list-complete"),
    pytest.param(lambda p, m: mypy_core_list(p, m, drop="orchestrator.files"),
                 ["mypy's check_untyped_defs modules differ from the core layer by ['orchestrator.files']"],
                 id="mypy-core-list-misses-one"),
]


@pytest.mark.parametrize("change, expected", MISSING)
def test_a_module_missing_from_a_list_is_named(change: Any, expected: list[str]) -> None:
    pyproject, modules = copy.deepcopy(read_pyproject()), package_modules()
    change(pyproject, modules)
    problems = module_list_problems(pyproject, modules)
    assert len(problems) == len(expected)
    for problem, fragment in zip(problems, expected, strict=True):
        assert fragment in problem
