"""The wheels the GPU check carries to the lent machine (benchmarks/wheels, `make gpu-wheels`), and
the offline check that they and the machine's own packages together meet every requirement.

    python benchmarks/gpu_wheels.py build benchmarks/wheels   download and build the set (cached), then check it
    python benchmarks/gpu_wheels.py check benchmarks/wheels   resolve it offline for the machine's Python 3.12

The lent machine (Python 3.12.3, torch 2.11.0+cu130, transformers 5.17.0, accelerate 1.15.0, no
network: benchmarks/gpu_machine.txt) is outside LLaMA-Factory 0.9.5's pins, so the set carries
the versions LLaMA-Factory asks for, which benchmarks/gpu_check.sh installs with `--no-deps
--target benchmarks/.gpu-site` in front of the machine's own. `check` is that install's
resolution done here: pip resolves what the GPU check needs (llamafactory, this project's
dependencies, the quantization packages) with `--no-index` from the carried wheels and an empty
placeholder wheel for each machine package the set does not carry, for Python 3.12 on manylinux
x86_64, so a missing or mismatched wheel fails here, not in a lent machine's 15 minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MACHINE_FILE = HERE / "gpu_machine.txt"
PYPROJECT = HERE.parent / "pyproject.toml"
BUDGET_MIB = 64
PYTHON = "3.12"  # the lent machine's (3.12.3)
# The wheel tags the machine takes (its glibc is not read: 2.28 and older, as most wheels are built).
PLATFORMS = (*(f"manylinux_2_{n}_x86_64" for n in range(28, 4, -1)), "manylinux2014_x86_64",
             "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64")

# Published as wheels for cp312 manylinux x86_64 or as pure Python: downloaded. The versions are
# the ones this project's venv runs (LLaMA-Factory 0.9.5's pins where it has them).
WHEELS = (
    # LLaMA-Factory and the versions it pins; the machine's transformers 5.17.0, accelerate 1.15.0
    # and tokenizers 0.23.2 are above them
    "llamafactory==0.9.5", "transformers==5.6.0", "peft==0.18.1", "trl==0.24.0", "accelerate==1.11.0",
    "datasets==4.0.0", "tokenizers==0.22.2", "huggingface-hub==1.33.0", "safetensors==0.8.0",
    "dill==0.3.8", "multiprocess==0.70.16", "fsspec==2025.3.0",
    # llamafactory-cli and its api
    "fire==0.7.1", "termcolor==3.3.0", "omegaconf==2.4.0", "tyro==0.8.14", "docstring-parser==0.18.0",
    "shtab==1.13.0", "sse-starlette==3.7.0", "fastapi==0.163.2", "starlette==0.52.1", "uvicorn==0.54.0",
    "h11==0.16.0", "pydantic==2.12.3", "pydantic-core==2.41.4", "annotated-types==0.8.0",
    "typing-inspection==0.4.5", "opentelemetry-api==1.45.2",
    # this project (pyproject.toml) and the GPU check's client
    "click==8.5.1", "jinja2==3.1.6", "openai==3.57.0", "jiter==0.19.0",
    "httpx==0.28.1", "httpcore==1.0.9", "httpx2==2.16.2", "httpcore2==2.16.2",
    "truststore==0.10.5", "anyio==4.16.0", "sniffio==1.3.1",
    # the quantized step (requirements-quant.txt)
    "optimum==2.3.0", "threadpoolctl==3.8.0",
)
# Published as source only, pure Python: built here (`pip wheel --no-deps`), py3-none-any.
SOURCE = ("gptqmodel==7.2.0", "device-smi==0.5.7", "tokenicer==0.0.14", "logbar==0.4.15", "defuser==0.0.28")
# Published as source only, a C extension: built here by a Python 3.12 (PYTHON312, else python3.12
# or pyenv's), cp312-cp312-linux_x86_64; it links the system's libpcre2-8.so.0 (glibc 2.34 or newer).
SOURCE_312 = ("pypcre==0.6.4",)
# Not carried, and said so by the GPU check.
NOT_CARRIED = {
    "bitsandbytes": "bitsandbytes 0.50.2 is a 43 MiB wheel, over the 64 MiB budget with the rest: "
                    "QLoRA (train.quantization_bit) is not checked on the lent machine",
}
# LLaMA-Factory 0.9.5 asks for these, the machine lacks them, and the GPU check's commands (train,
# export, api) never import them: stood in for by placeholders at a version its pins take.
LEFT_OUT = {
    "gradio": ("5.50.0", "LlamaBoard (`orchestrator webui`) only"),
    "av": ("16.0.0", "video and audio inputs only"),
    "torchdata": ("0.11.0", "LLaMA-Factory's v1 trainer (USE_V1) only"),
    "hf-transfer": ("0.1.9", "hub downloads only (the machine has no network)"),
    "modelscope": ("1.40.2", "`orchestrator download` only (the machine has no network)"),
}
# gptqmodel 7.2.0's requirements the quantized step runs without (requirements-quant.txt says why).
GPTQMODEL_WAIVED = {
    "accelerate": "asks >=1.13.0; runs on LLaMA-Factory's 1.11.0",
    "numpy": "asks ==2.2.6; runs on the machine's",
    "torchao": "its FP4 kernels only",
    "maturin": "a build tool",
}
QUANT = ("optimum", "gptqmodel")  # what the quantized step needs


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(spec: str) -> tuple[str, str]:
    name, _, version = spec.partition("==")
    return canonical(name), version


def machine_packages(path: Path = MACHINE_FILE) -> dict[str, str]:
    """The lent machine's packages, name -> version ("0" where none is recorded)."""
    found: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[canonical(name)] = version.strip() or "0"
    return found


def carried(wheels: Path) -> dict[str, list[Path]]:
    """The wheels in `wheels`, by canonical name (more than one file: two versions)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(wheels.glob("*.whl")):
        found.setdefault(canonical(path.name.split("-", 1)[0]), []).append(path)
    return found


def placeholder(folder: Path, name: str, version: str) -> Path:
    """An empty wheel that says it is `name` `version` and needs nothing: a machine package."""
    stem = f"{re.sub(r'[-.]+', '_', name)}-{version}"
    path = folder / f"{stem}-py3-none-any.whl"
    files = {
        f"{stem}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{stem}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: gpu_wheels\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{n},,\n" for n in files) + f"{stem}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as whl:
        for n, text in {**files, f"{stem}.dist-info/RECORD": record}.items():
            whl.writestr(n, text)
    return path


def wheel_requirements(path: Path) -> list[str]:
    """The Requires-Dist lines of a wheel (extras' included: pip evaluates their markers)."""
    with zipfile.ZipFile(path) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(name).decode("utf-8")
    return [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]


def project_requirements() -> list[str]:
    try:
        import tomllib
    except ImportError:  # Python 3.10: pip's own copy
        from pip._vendor import tomli as tomllib
    return list(tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"])


def needed(wheels: dict[str, list[Path]]) -> list[str]:
    """What the GPU check runs: LLaMA-Factory, this project, and the quantization packages' needs
    (gptqmodel's less what it runs without; gptqmodel itself is installed with --no-deps)."""
    wanted = ["llamafactory==0.9.5", *project_requirements(), "optimum"]
    for path in wheels.get("gptqmodel", []):
        for requirement in wheel_requirements(path):
            name = canonical(re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0])
            if name not in GPTQMODEL_WAIVED and "extra ==" not in requirement:
                wanted.append(requirement)
    return wanted


def pip_env() -> dict[str, str]:
    """pip with no configuration: no index, find-links or constraints of this machine's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def target_flags() -> list[str]:
    flags = ["--python-version", PYTHON, "--implementation", "cp", "--abi", f"cp{PYTHON.replace('.', '')}",
             "--abi", "abi3", "--abi", "none", "--only-binary=:all:"]
    for platform in PLATFORMS:
        flags += ["--platform", platform]
    return flags


class Unresolved(Exception):
    pass


def check(wheels: Path, machine: dict[str, str] | None = None) -> list[str]:
    """Resolve the carried set offline for the lent machine; the lines that say what it holds.
    Raises Unresolved with pip's own words when a wheel is missing, mismatched or doubled."""
    machine = machine_packages() if machine is None else machine
    have = carried(wheels)
    if not have:
        raise Unresolved(f"{wheels} holds no wheels: `make gpu-wheels` fills it")
    doubled = {name: [p.name for p in paths] for name, paths in have.items() if len(paths) > 1}
    if doubled:
        raise Unresolved(f"{wheels} holds two versions of one package (the --no-deps install takes both): {doubled}")
    missing_quant = [name for name in QUANT if name not in have]
    if missing_quant:
        raise Unresolved(f"{wheels} lacks {', '.join(missing_quant)}: the GPU check's quantized step needs them")
    with tempfile.TemporaryDirectory(prefix="gpu-wheels-check-") as tmp:
        stand_ins = Path(tmp) / "machine"
        stand_ins.mkdir()
        for name, version in {**machine, **{n: v for n, (v, _) in LEFT_OUT.items()}}.items():
            if name not in have:  # a carried one shadows the machine's (--target in front)
                placeholder(stand_ins, name, version)
        base = [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed", "--no-index",
                "--target", str(Path(tmp) / "target"), *target_flags()]
        # 1. every carried wheel installs on the machine's Python as gpu_check.sh installs them
        _pip([*base, "--no-deps", *(str(p) for paths in have.values() for p in paths)],
             "a carried wheel does not install on Python 3.12 manylinux x86_64")
        # 2. what the GPU check imports resolves from the carried wheels and the machine's packages
        report = Path(tmp) / "report.json"
        _pip([*base, "--find-links", str(wheels), "--find-links", str(stand_ins), "--report", str(report),
              *needed(have)], "the carried wheels and the machine's packages do not meet every requirement")
        installs = json.loads(report.read_text(encoding="utf-8"))["install"]
    resolved = {canonical(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}
    unused = sorted(set(have) - set(resolved) - {"gptqmodel"})
    if unused:
        raise Unresolved(f"carried but needed by nothing the GPU check runs: {', '.join(unused)} "
                         "(take it out of benchmarks/gpu_wheels.py)")
    from_machine = sorted(n for n in resolved if n not in have and n in machine)
    left_out = sorted(n for n in resolved if n in LEFT_OUT)
    size = sum(p.stat().st_size for paths in have.values() for p in paths) / 2**20
    return [
        f"{wheels}: {len(have)} wheels, {size:.1f} MiB (budget {BUDGET_MIB} MiB), resolved offline for Python {PYTHON} "
        f"with {len(from_machine)} of the machine's own packages ({MACHINE_FILE.name})",
        "carried: " + ", ".join(f"{n} {resolved.get(n, _version(have[n][0]))}" for n in sorted(have)),
        "from the machine: " + ", ".join(f"{n} {resolved[n]}" for n in from_machine),
        "left out (not imported by train, export or api): " + ", ".join(f"{n} ({LEFT_OUT[n][1]})" for n in left_out),
        *(f"not carried: {why}" for why in NOT_CARRIED.values()),
    ]


def _version(path: Path) -> str:
    return path.name.split("-")[1]


def _pip(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, env=pip_env())
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise Unresolved(f"{what}; pip says:\n" + "\n".join(f"  {line}" for line in lines[-15:]))


# ---------------------------------------------------------------- building the set

def cache_dir() -> Path:
    """Built once per machine: ~/.cache/orchestrator/gpu-wheels/<digest of what it holds>."""
    digest = hashlib.sha256(json.dumps([WHEELS, SOURCE, SOURCE_312, PYTHON, PLATFORMS]).encode()).hexdigest()[:16]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orchestrator" / "gpu-wheels"
    return root / digest


def python312() -> str:
    """A Python 3.12 here, to build the C extensions for the machine's."""
    candidates = [os.environ.get("PYTHON312", ""), shutil.which("python3.12") or "",
                  *sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))]
    for candidate in filter(None, candidates):
        try:
            version = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                                     capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if version == "(3, 12)":
            return candidate
    raise SystemExit(f"Error: {', '.join(SOURCE_312)} (a C extension published as source only) is built for the "
                     "machine's Python 3.12 by a Python 3.12 here, and none was found: set PYTHON312=/path/to/python3.12")


def build() -> Path:
    """The carried set, downloaded and built into the cache (once; a complete folder or none)."""
    done = cache_dir()
    if (done / ".complete").exists():
        return done
    done.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=done.parent, prefix=f".{done.name}.tmp-"))
    try:
        quiet = ["--quiet", "--no-deps"]
        print(f"downloading {len(WHEELS)} wheels for Python {PYTHON} manylinux x86_64", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", *quiet, *target_flags(), "-d", str(tmp), *WHEELS],
                       check=True)
        print(f"building {len(SOURCE)} pure-Python source packages: {', '.join(SOURCE)}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", *quiet, "-w", str(tmp), *SOURCE], check=True)
        interpreter = python312()
        print(f"building {', '.join(SOURCE_312)} with {interpreter}", flush=True)
        subprocess.run([interpreter, "-m", "pip", "wheel", *quiet, "-w", str(tmp), *SOURCE_312], check=True)
        (tmp / ".complete").touch()
        tmp.chmod(0o755)
        try:
            os.replace(tmp, done)
        except OSError:  # another build finished first
            if not (done / ".complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return done


def install(source: Path, dest: Path) -> None:
    """`dest` holds exactly the wheels of `source`: replaced whole, then the old one removed."""
    tmp = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for path in sorted(source.glob("*.whl")):
        shutil.copy2(path, tmp / path.name)
    old = dest.parent / f".{dest.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "check"))
    parser.add_argument("wheels", type=Path, help="the folder of wheels (benchmarks/wheels)")
    args = parser.parse_args()
    if args.command == "build":
        install(build(), args.wheels)
    try:
        lines = check(args.wheels)
    except Unresolved as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    size = sum(p.stat().st_size for p in args.wheels.glob("*.whl")) / 2**20
    if size > BUDGET_MIB:
        print(f"Error: {args.wheels} is {size:.1f} MiB, over the {BUDGET_MIB} MiB a device call carries", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
