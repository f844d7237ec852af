"""The house rules `make test` checks before the tests: ruff, mypy and the one-way imports
(cli -> stages -> core). Each check really fails on a violation, and fails `make test`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import REPO

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
    pytest.param("stages/dataset.py", "from orchestrator.stages import distill  # noqa: F401\n",
                 "orchestrator.stages.dataset -> orchestrator.stages.distill (l.", id="stage-imports-stage"),
    pytest.param("core/recipes/loading.py", "from orchestrator.stages import train  # noqa: F401\n",
                 "orchestrator.core.recipes -> orchestrator.stages.train (l.", id="core-imports-stage"),
    pytest.param("core/common/process.py", "import click  # noqa: F401\n",
                 "orchestrator.core.common.process -> click (l.", id="core-imports-click"),
    pytest.param("core/common/files.py", "from orchestrator import cli  # noqa: F401\n",
                 "orchestrator.core.common.files -> orchestrator.cli (l.", id="core-imports-cli"),
    pytest.param("core/brand_new.py", "from orchestrator.stages import infer  # noqa: F401\n",
                 "orchestrator.core.brand_new -> orchestrator.stages.infer (l.", id="new-core-module"),
    pytest.param("stages/brand_new.py", "from orchestrator import cli  # noqa: F401\n",
                 "orchestrator.stages.brand_new -> orchestrator.cli (l.", id="new-stage-imports-cli"),
]


@pytest.mark.parametrize("module, line, message", UPWARD)
def test_the_import_contract_refuses_an_upward_import(tmp_path: Path, module: str, line: str, message: str) -> None:
    project = copy_project(tmp_path)
    assert run(project, str(BIN / "lint-imports"), "--no-cache").returncode == 0
    path = project / "orchestrator" / module  # a new file is checked with no list to update
    path.write_text((path.read_text(encoding="utf-8") if path.exists() else "") + line, encoding="utf-8")
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


# commands whose stage module is named otherwise: `render` is the first half of `check`
STAGE_OF = {"render": "check", "eval": "evaluate"}


def test_one_stage_module_per_command() -> None:
    """`ls orchestrator/stages` is the commands of `orchestrator --help`."""
    from orchestrator.cli import cli

    modules = {p.stem for p in (REPO / "orchestrator" / "stages").glob("*.py")} - {"__init__"}
    assert modules == {STAGE_OF.get(name, name.replace("-", "_")) for name in cli.commands}
