"""What the image installs, resolved by pip itself: the pins from pip's inspect report of this
environment (every installed distribution with its version and requirements, as JSON), and the
wheels for the image's Python and platform, with pip's install report (JSON) naming the
requirements published only as source, which are built here and must come out pure Python.
Also the project's own wheel, built reproducibly."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import StageFailed, UserError
from orchestrator.core.common.paths import SOURCE_ROOT, cache_dir

# Provided by the base image (or pinned by vllm): a CPU build pinned here would replace them.
TORCH_STACK = re.compile(r"(torch|torchvision|torchaudio|triton|pytorch-triton|nvidia-.+)")
SOURCE_FILES = ("pyproject.toml", "README.md")  # besides orchestrator/: what the wheel is built from
WHEEL_EPOCH = "315532800"  # SOURCE_DATE_EPOCH: the same sources build the same wheel bytes
# The wheels' platforms: x86_64 glibc up to 2.35 (pytorch/pytorch is Ubuntu 22.04); pip expands manylinux2014.
WHEEL_PLATFORMS = (*(f"manylinux_2_{minor}_x86_64" for minor in range(35, 16, -1)), "manylinux2014_x86_64")
NO_INDEX_HOW = "run it where the package index is reachable, or pass --no-wheels (then `docker build` downloads them)"


def _pip(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *map(str, args)], capture_output=True, text=True)


def _pip_error(done: subprocess.CompletedProcess) -> str:
    """pip's own last ERROR line, quoted to the user (what failed is known from data, not from it)."""
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["no output"])[-1]


def _pip_json(*args: str | Path, what: str) -> dict[str, Any]:
    """The JSON report of a pip command that writes it to stdout (`--report -`, `inspect`)."""
    done = _pip(*args)
    try:
        report = json.loads(done.stdout) if done.returncode == 0 else None
    except ValueError:
        report = None
    if not isinstance(report, dict):
        raise StageFailed(f"package: pip's {what} failed (pip: {_pip_error(done)})")
    return report


class Installed:
    """This environment as pip's inspect report lists it: each distribution's version and
    requirements by canonical name, and the marker environment they are evaluated in."""

    def __init__(self, report: dict[str, Any]):
        from packaging.utils import canonicalize_name

        self.environment: dict[str, str] = report.get("environment") or {}
        self.dists: dict[str, dict[str, Any]] = {
            canonicalize_name(d["metadata"]["name"]): d["metadata"] for d in report.get("installed") or []}

    @classmethod
    def here(cls) -> Installed:
        return _here()

    def requires(self, name: str, extra: str = "") -> list[Any]:
        """The requirements of `name` that apply here (with `extra` asked for)."""
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.utils import canonicalize_name

        out = []
        for line in self.dists.get(canonicalize_name(name), {}).get("requires_dist") or []:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate({**self.environment, "extra": extra}):
                out.append(req)
        return out


@functools.cache
def _here() -> Installed:
    """This environment, asked of pip once per process (a command packages once)."""
    return Installed(_pip_json("inspect", "--local", what="inspect report of this environment"))


def pinned_requirements(installed: Installed | None = None) -> list[str]:
    """`name==version` of everything the project needs, as installed here (the torch stack
    left to the base image). vLLM is not among them: it has an environment of its own in the
    image (vllm.IMAGE_PINS), as on this machine (`make setup-vllm`)."""
    from packaging.utils import canonicalize_name

    env = installed or Installed.here()
    pins: dict[str, str] = {}
    todo = env.requires("orchestrator")
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in pins or TORCH_STACK.fullmatch(name) or name == "orchestrator" or name not in env.dists:
            continue  # (not installed: an optional dependency this environment does without)
        pins[name] = env.dists[name]["version"]
        todo += env.requires(name) + [r for extra in req.extras for r in env.requires(name, extra)]
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def build_wheel(into: Path) -> Path:
    """The project's wheel, built from a copy of its sources (the checkout stays clean) with
    setuptools' own PEP 517 hook, offline; the same sources give the same bytes."""
    with tempfile.TemporaryDirectory(prefix="orchestrator-wheel-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(SOURCE_ROOT / "orchestrator", src / "orchestrator",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in SOURCE_FILES:
            shutil.copy2(SOURCE_ROOT / name, src / name)
        out = Path(tmp) / "dist"
        code = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
        done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True, text=True,
                              env={**os.environ, "SOURCE_DATE_EPOCH": WHEEL_EPOCH})
        if done.returncode != 0:
            raise StageFailed("package: building the project's wheel failed:",
                              *[f"  {line}" for line in (done.stdout + done.stderr).splitlines()[-12:]])
        wheel = out / done.stdout.split()[-1]
        into.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(wheel, into / wheel.name))


def wheel_cache() -> Path:
    """Where downloaded wheels are kept between packages (hard-linked into DIR/wheels)."""
    return cache_dir("wheels")


def _cached(requirement: str, cache: Path) -> bool:
    """Whether the cache holds a wheel of `requirement` (`name==version`), by its file names."""
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

    name, _, version = requirement.partition("==")
    for wheel in cache.glob("*.whl"):
        try:
            found, found_version, _, _ = parse_wheel_filename(wheel.name)
        except InvalidWheelFilename:
            continue
        if found == canonicalize_name(name) and str(found_version) == version:
            return True
    return False


def source_only(listed: Path, cache: Path, python: str) -> list[str]:
    """The requirements pip would install from source here (no wheel for this machine), from its
    install report: `name==version` each. Refuses what no index (nor the cache) offers."""
    done = _pip("install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet", "--report", "-",
                "--find-links", cache, "-r", listed)
    try:
        report = json.loads(done.stdout) if done.returncode == 0 else None
    except ValueError:
        report = None
    if not isinstance(report, dict):
        wanted = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
        missing = next((r for r in wanted if not _cached(r, cache)), None)
        what = f"no wheel of {missing}" if missing else "not every wheel"
        raise UserError(f"package: {what} for Python {python} could be downloaded (pip: {_pip_error(done)}); "
                        + NO_INDEX_HOW)
    return [f"{item['metadata']['name']}=={item['metadata']['version']}" for item in report.get("install") or []
            if not str((item.get("download_info") or {}).get("url", "")).endswith(".whl")]


def download_wheels(requirements: list[str], python: str, cache: Path) -> dict[str, Path]:
    """A wheel of every requirement (`name==version`) for Python `python` on x86_64 Linux -> its
    file in `cache`. Taken from the cache when it has them all (offline), else downloaded into it
    by pip from the configured index; a requirement published only as source (pip's install
    report says which) is built here with pip wheel and must come out pure Python."""
    target = ["--no-deps", "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
              *[a for p in WHEEL_PLATFORMS for a in ("--platform", p)]]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="orchestrator-wheels-") as tmp:
        listed = Path(tmp) / "requirements.txt"
        listed.write_text("".join(f"{r}\n" for r in requirements), encoding="utf-8")
        chosen = Path(tmp) / "chosen"
        pick: tuple[str | Path, ...] = ("download", *target, "--no-index", "--find-links", cache, "-d", chosen, "-r", listed)
        if _pip(*pick).returncode != 0:
            for source in source_only(listed, cache, python):
                if _cached(source, cache):
                    continue
                wheel = _pip("wheel", "--no-deps", "--no-binary", ":all:", "-w", cache, source)
                if wheel.returncode or not any(cache.glob(f"{_wheel_stem(source)}-*-none-any.whl")):
                    raise UserError(f"package: {source} has no wheel for Python {python} on x86_64 Linux and "
                                    f"does not build as pure Python here (pip: {_pip_error(wheel)}); pin another "
                                    "version, or pass --no-wheels")
            done = _pip("download", *target, "--find-links", cache, "-d", cache, "-r", listed)
            if done.returncode:
                raise UserError(f"package: downloading the image's wheels for Python {python} failed "
                                f"(pip: {_pip_error(done)}); " + NO_INDEX_HOW)
            done = _pip(*pick)
            if done.returncode:
                raise UserError(f"package: the image's wheels in {cache} do not cover the requirements "
                                f"(pip: {_pip_error(done)})")
        return {f.name: cache / f.name for f in sorted(chosen.iterdir())}


def _wheel_stem(requirement: str) -> str:
    """The file-name prefix of a requirement's wheels, `Name_With_Underscores-version`."""
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '_', name)}-{version}"
