"""The house rules `make test` checks before the tests: ruff, mypy and the one-way imports
(cli -> stages -> core). Each check really fails on a violation, and fails `make test`."""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
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
    assert steps[-5:] == ["ruff", "mypy", "lint-imports", "python", "python"]
    # the fast tests spread over processes, then the slow ones: every test, none twice
    fast, slow = [line for line in plan.splitlines() if " -m pytest " in line][-2:]
    assert '-m "not slow and not browser" -n ' in fast and '-m "slow or browser" -n ' in slow
    assert "--dist loadgroup" in slow  # a module's costly fixture (xdist_group) built in one process


def test_an_xdist_group_runs_on_one_worker(tmp_path: Path) -> None:
    """`--dist loadgroup` sends a module's xdist_group to one worker, so its module fixture (a vLLM
    server, a browser) starts once: pytest 9.2 with pytest-xdist 3.8 split them (pyproject pins)."""
    (tmp_path / "test_grouped.py").write_text(
        "import os, time, pytest\n"
        "pytestmark = pytest.mark.xdist_group('one')\n"
        "@pytest.mark.parametrize('i', range(4))\n"
        "def test_a(i, tmp_path_factory):\n"
        "    time.sleep(0.2)\n"
        f"    open({str(tmp_path)!r} + f'/ran-{{i}}', 'w').write(os.environ['PYTEST_XDIST_WORKER'])\n"
        "def test_b():\n    time.sleep(0.5)\n", encoding="utf-8")
    done = subprocess.run([str(REPO / ".venv/bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                           "--dist", "loadgroup", "test_grouped.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert len({p.read_text() for p in tmp_path.glob("ran-*")}) == 1


UPWARD = [
    pytest.param("stages/dataset.py", "from orchestrator.stages import distill  # noqa: F401\n",
                 "orchestrator.stages.dataset -> orchestrator.stages.distill (l.", id="stage-imports-stage"),
    pytest.param("core/recipes/loading.py", "from orchestrator.stages import train  # noqa: F401\n",
                 "orchestrator.core.recipes.loading -> orchestrator.stages.train (l.", id="core-imports-stage"),
    pytest.param("core/common/process.py", "import click  # noqa: F401\n",
                 "orchestrator.core.common.process -> click (l.", id="core-imports-click"),
    pytest.param("core/common/files.py", "from orchestrator import cli  # noqa: F401\n",
                 "orchestrator.core.common.files -> orchestrator.cli (l.", id="core-imports-cli"),
    pytest.param("core/data/brand_new.py", "from orchestrator.stages import infer  # noqa: F401\n",
                 "orchestrator.core.data.brand_new -> orchestrator.stages.infer (l.", id="new-core-module"),
    pytest.param("stages/brand_new.py", "from orchestrator import cli  # noqa: F401\n",
                 "orchestrator.stages.brand_new -> orchestrator.cli (l.", id="new-stage-imports-cli"),
    pytest.param("stages/infer/votes.py", "from orchestrator.stages import score  # noqa: F401\n",
                 "orchestrator.stages.infer.votes -> orchestrator.stages.score (l.", id="stage-package-imports-stage"),
    # core's rooms are layers: a room imports only the rooms below it, in a function or for
    # type checking too, and a module or room not given its place is refused
    pytest.param("core/common/files.py", "from orchestrator.core.recipes import loading  # noqa: F401\n",
                 "orchestrator.core.common.files -> orchestrator.core.recipes.loading (l.", id="room-imports-a-higher-room"),
    pytest.param("core/data/answers.py",
                 "\n\ndef _later():\n    from orchestrator.core.llamafactory import gptq  # noqa: F401\n",
                 "orchestrator.core.data.answers -> orchestrator.core.llamafactory.gptq (l.", id="in-a-function"),
    pytest.param("core/run_folders/trace.py",
                 "import typing\nif typing.TYPE_CHECKING:\n    from orchestrator.core.data.prompts import Example  # noqa\n",
                 "orchestrator.core.run_folders.trace -> orchestrator.core.data.prompts (l.", id="for-type-checking"),
    pytest.param("core/brand_new.py", "", "- orchestrator.core.brand_new\n", id="module-outside-the-rooms"),
    pytest.param("core/newroom/__init__.py", "", "- orchestrator.core.newroom\n", id="room-not-in-the-contract"),
]


@pytest.mark.parametrize("module, line, message", UPWARD)
def test_the_import_contract_refuses_an_upward_import(tmp_path: Path, module: str, line: str, message: str) -> None:
    project = copy_project(tmp_path)
    assert run(project, str(BIN / "lint-imports"), "--no-cache").returncode == 0
    path = project / "orchestrator" / module  # a new file is checked with no list to update
    path.parent.mkdir(exist_ok=True)
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
STAGE_OF = {"render": "check", "eval": "evaluate", "recipe": "recipe_import"}  # `recipe import`


def stages_in(folder: Path) -> set[str]:
    """The stages `folder` holds: each module, and each package (a folder with __init__.py), by name."""
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    return modules | {p.parent.name for p in folder.glob("*/__init__.py")}


def stage_commands() -> set[str]:
    """The stage module (or package) each command of `orchestrator --help` names."""
    from orchestrator.cli import cli

    return {STAGE_OF.get(name, name.replace("-", "_")) for name in cli.commands}


def test_one_stage_module_per_command() -> None:
    """`ls orchestrator/stages` is the commands of `orchestrator --help`."""
    assert stages_in(REPO / "orchestrator" / "stages") == stage_commands()


@pytest.mark.parametrize("stray", ["brand_new.py", "brand_new/__init__.py"], ids=["module", "package"])
def test_a_stray_stage_module_breaks_the_rule(tmp_path: Path, stray: str) -> None:
    stages = shutil.copytree(REPO / "orchestrator" / "stages", tmp_path / "stages",
                             ignore=shutil.ignore_patterns("__pycache__"))
    assert stages_in(stages) == stage_commands()
    (stages / stray).parent.mkdir(exist_ok=True)
    (stages / stray).write_text("", encoding="utf-8")
    assert stages_in(stages) - stage_commands() == {"brand_new"}


# ---------------------------------------------------------------- no import cycle, of any kind


@dataclass(frozen=True)
class Edge:
    target: str
    line: int
    where: str  # "module level", "in f()", "for type checking"


def _modules(root: Path) -> dict[str, Path]:
    """Every module of the package under `root`, by dotted name (a package by its __init__.py)."""
    out = {}
    for path in sorted((root / "orchestrator").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(root: Path) -> dict[str, dict[str, Edge]]:
    """module -> {module it imports: the first such import}, for every import of our own
    modules: at module level, in a function, under `if TYPE_CHECKING:`. Importing a module
    also runs the __init__.py of each package above it, so those count too."""
    modules = _modules(root)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, Edge]] = {m: {} for m in modules}

    def visit(module: str, node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            here = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                here = f"in {child.name}()"
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                here = "for type checking"
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [f"{child.module}.{a.name}" for a in child.names]  # a module, or a name in one
            for name in names:
                target = resolve(name)
                if target is None:
                    continue
                parts = target.split(".")
                for i in range(2, len(parts) + 1):  # the packages above it (not `orchestrator`, empty)
                    step = ".".join(parts[:i])
                    if step in modules and step != module and not module.startswith(step + "."):
                        graph[module].setdefault(step, Edge(step, child.lineno, here))
            visit(module, child, here)

    for module, path in modules.items():
        visit(module, ast.parse(path.read_text(encoding="utf-8"), str(path)), "module level")
    return graph


def cycles(graph: dict[str, dict[str, Edge]]) -> list[tuple[list[str], set[str]]]:
    """One cycle through each group of modules that import each other round (a strongly connected
    component), as the modules in order, with the whole group."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def strong(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(set(group))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    found = []
    for group in groups:  # the shortest way round from the group's first module back to it
        start = min(group)
        paths = {start: [start]}
        todo = [start]
        while todo:
            v = todo.pop(0)
            for w in sorted(graph[v]):
                if w == start:
                    found.append((paths[v], group))
                    todo = []
                    break
                if w in group and w not in paths:
                    paths[w] = paths[v] + [w]
                    todo.append(w)
    return found


def describe(graph: dict[str, dict[str, Edge]], found: tuple[list[str], set[str]]) -> str:
    cycle, group = found
    steps = []
    for a, b in zip(cycle, cycle[1:] + cycle[:1]):
        edge = graph[a][b]
        steps.append(f"{a} -> {b} (l.{edge.line}, {edge.where})")
    rest = sorted(group - set(cycle))
    return "; ".join(steps) + (f" (and round through {', '.join(rest)})" if rest else "")


def test_no_import_cycle() -> None:
    """Among our own modules, counting imports in functions and for type checking: a cycle is
    named, import by import, so the fix (a module split, or a name moved down a room) is plain."""
    graph = import_graph(REPO)
    assert len(graph) > 50
    found = [describe(graph, c) for c in cycles(graph)]
    assert not found, "import cycles:\n" + "\n".join(found)


CYCLES = [
    pytest.param("core/common/errors.py", "\n\ndef _later():\n    from orchestrator.core.serving import agents  # noqa: F401\n",
                 "orchestrator.core.common.errors -> orchestrator.core.serving.agents (l.", id="in-a-function"),
    pytest.param("core/data/prompts.py",
                 "import typing\nif typing.TYPE_CHECKING:\n    from orchestrator.core.data.fewshot import Retriever  # noqa\n",
                 "-> orchestrator.core.data.fewshot (l.", id="for-type-checking"),
    pytest.param("core/common/__init__.py", "from orchestrator.core.common import files  # noqa: F401\n"
                 "from orchestrator.core.data import competition  # noqa: F401\n",
                 "orchestrator.core.common -> orchestrator.core.data.competition", id="through-a-package"),
]


@pytest.mark.parametrize("module, line, message", CYCLES)
def test_a_planted_cycle_is_named(tmp_path: Path, module: str, line: str, message: str) -> None:
    project = copy_project(tmp_path)
    path = project / "orchestrator" / module
    path.write_text(path.read_text(encoding="utf-8") + line, encoding="utf-8")
    graph = import_graph(project)
    found = "\n".join(describe(graph, c) for c in cycles(graph))
    assert message in found


def test_our_imports_in_functions_say_why() -> None:
    """An import of our own modules sits at the top of the module, where the import graph (and a
    cycle) is plain to see; one in a function, or under TYPE_CHECKING, is there for start-up time
    and says so in a comment on its line. The cli package is the exception its docstring
    names: every command imports its stage when it runs, so `orchestrator --help` is instant."""
    unexplained = []
    for module, path in _modules(REPO).items():
        if module == "orchestrator.cli" or module.startswith("orchestrator.cli."):
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            lazy = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (
                isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))
            if not lazy or not isinstance(body, list):
                continue
            for child in ast.walk(node):
                ours = (isinstance(child, ast.ImportFrom) and child.level == 0 and (child.module or "").startswith("orchestrator")
                        or isinstance(child, ast.Import) and any(a.name.startswith("orchestrator") for a in child.names))
                if ours and "#" not in lines[child.lineno - 1] and "#" not in lines[child.end_lineno - 1]:
                    unexplained.append(f"{path.relative_to(REPO)}:{child.lineno}: {lines[child.lineno - 1].strip()}")
    assert not unexplained, ("imports of our modules inside a function or under TYPE_CHECKING, with no comment saying "
                             "why (move them to the top, or say why they wait):\n" + "\n".join(sorted(set(unexplained))))


def test_no_module_over_600_lines() -> None:
    """A module that grows past 600 lines is doing two jobs: split it (a core module into its room,
    a stage into a package, the commands by what they work on)."""
    long = {str(p.relative_to(REPO)): n for p in (REPO / "orchestrator").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}
    assert not long, long


TESTED_ELSEWHERE = re.compile(r"^- `(orchestrator/[^`]+)`: (.+)$", re.M)


def test_every_module_with_logic_has_its_mirrored_test_file_or_a_reason() -> None:
    """docs/development.md's claim: a module with a function or a class is tested at the mirrored
    path (orchestrator/a/b.py -> tests/a/test_b.py), or a line there says why not."""
    listed = dict(TESTED_ELSEWHERE.findall((REPO / "docs" / "development.md").read_text(encoding="utf-8")))
    modules = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "orchestrator").rglob("*.py"))
    untested, mirrored_and_listed = [], []
    for module in modules:
        tree = ast.parse((REPO / module).read_text(encoding="utf-8"))
        if not any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for node in ast.walk(tree)):
            continue  # constants, re-exports, a docstring: no logic of its own
        path = Path(module).relative_to("orchestrator")
        mirrored = (REPO / "tests" / path.parent / f"test_{path.stem}.py").is_file()
        reason = any(fnmatch.fnmatch(module, pattern) for pattern in listed)
        if not mirrored and not reason:
            untested.append(module)
        if mirrored and module in listed:
            mirrored_and_listed.append(module)
    assert not untested, f"no tests/<same path>/test_<module>.py, and no reason in docs/development.md: {untested}"
    assert not mirrored_and_listed, f"tested at the mirrored path: drop their line in docs/development.md: {mirrored_and_listed}"
    stale = [pattern for pattern in listed if not any(fnmatch.fnmatch(m, pattern) for m in modules)]
    assert not stale, f"docs/development.md gives a reason for modules that are not there: {stale}"
