"""Where things live. Everything generated goes under runs/ and datasets/ of the project root."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.core.common.errors import UserError

# The source checkout (templates/, datasets/sample/): the package's parent folder, or
# $ORCHESTRATOR_SOURCE where the package is installed from a wheel (the submission image).
SOURCE_ROOT = Path(os.environ.get("ORCHESTRATOR_SOURCE") or Path(__file__).resolve().parents[3])
HOME_ENV = "ORCHESTRATOR_HOME"


def project_root() -> Path:
    """The project directory: $ORCHESTRATOR_HOME, else the nearest folder from the working
    directory up that holds recipes/pipeline.yaml, else the working directory."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).resolve()
    return found_project() or Path.cwd().resolve()


def found_project() -> Path | None:
    """The nearest folder from the working directory up that holds recipes/pipeline.yaml."""
    cwd = Path.cwd().resolve()
    return next((d for d in (cwd, *cwd.parents) if (d / "recipes" / "pipeline.yaml").is_file()), None)


def cache_dir(*parts: str) -> Path:
    """The orchestrator's cache on this machine: $XDG_CACHE_HOME/orchestrator, else ~/.cache/orchestrator."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "orchestrator", *parts)


def runs_dir() -> Path:
    return project_root() / "runs"


def datasets_dir() -> Path:
    return project_root() / "datasets"


def val_path() -> Path:
    """The held-out validation problems in competition format, with their answers."""
    return datasets_dir() / "val.jsonl"


def inside(path: str | Path, base: Path, what: str) -> Path:
    """Resolve `path` against `base`; refuse anything that escapes it (`../`, absolute elsewhere)."""
    resolved = (base / path).resolve()
    if resolved != base.resolve() and base.resolve() not in resolved.parents:
        raise UserError(f"{what}: {path} is outside {base} (paths may not escape it)")
    return resolved


def display(path: Path) -> str:
    """`path` relative to the working directory when inside it, as users typed it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def project_relative(path: str | Path) -> str:
    """`path` as a record between stages keeps it: relative to the project folder when inside it
    (so a moved or mounted project reads it), else absolute."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(project_root()).as_posix()
    except ValueError:
        return str(resolved)


def from_project(recorded: str) -> Path:
    """A path a record kept (project_relative), where it is now. An absolute one (outside the
    project, or written before records kept paths relative) as it was; when it no longer exists,
    the project file its last two or more parts name (the project was moved), if there is one."""
    path = Path(recorded)
    if not path.is_absolute():
        return project_root() / path
    if not path.exists():
        parts = path.parts[1:]
        for start in range(len(parts) - 1):
            moved = project_root().joinpath(*parts[start:])
            if moved.exists():
                return moved
    return path
