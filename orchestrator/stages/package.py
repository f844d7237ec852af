"""Stage: the submission image as a folder, `orchestrator package --out DIR`.

DIR holds what a Docker image needs to answer a test file on a GPU machine with no network,
and nothing else:

  Dockerfile        FROM package.base_image, WORKDIR /app, CMD ["sh", "run.sh"]
  run.sh            answers INPUT into OUTPUT with `orchestrator infer`, then checks OUTPUT
  requirements.txt  exact versions of what the project runs on (the torch stack is the base
                    image's, or vllm's pin when a model is served with vLLM)
  wheels/           the project's own wheel and, unless --no-wheels, a wheel of every requirement
                    for package.python on x86_64 Linux: the Dockerfile installs from it with no index
  recipes/          the pipeline and role recipes, frozen: no extends, paths inside the image
  templates/        the prompts and LLaMA-Factory templates the recipes were trained with
  runs/, models/    the models the recipes serve: merged models, or a base and its adapters
                    (hard links where the file system allows, else copies)
  .dockerignore     keeps what a local try of run.sh writes (runs/infer, logs) out of the image
  MANIFEST          every file's sha256 (`sha256sum -c MANIFEST`) and the models' sizes

The GPU memory of serving is estimated first (core/serving/memory.py) and a package that would not fit
package.gpu_memory_gb is refused before anything is copied. Packaging again copies nothing
unchanged and removes what it wrote before that is no longer needed; a DIR without our
MANIFEST is refused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.core.common.errors import StageFailed, UserError
from orchestrator.core.common.files import atomic_write_text
from orchestrator.core.common.paths import SOURCE_ROOT, cache_dir, display
from orchestrator.core.common.progress import say
from orchestrator.core.common.render import render
from orchestrator.core.data.fallback import fallback_letter
from orchestrator.core.llamafactory.quantization import served_weights
from orchestrator.core.recipes.loading import Loaded, command_for
from orchestrator.core.recipes.schema import PipelineRecipe, RoleRecipe
from orchestrator.core.run_folders.role_paths import ADAPTER_FILE, is_trained, model_path, role_paths
from orchestrator.core.serving.memory import ConfigError, ServerEstimate, budget_problem, peak_gb, server_estimate
from orchestrator.core.serving.servers import check_adapters, lora_group_key, one_server
from orchestrator.core.serving.vllm import IMAGE_PINS, IMAGE_PYTHON

MANIFEST_HEADER = "# orchestrator package:"
VLLM_DEFAULT_MAXLEN = 4096  # LLaMA-Factory's vllm_maxlen when serve.args does not set it
# Provided by the base image (or pinned by vllm): a CPU build pinned here would replace them.
TORCH_STACK = re.compile(r"(torch|torchvision|torchaudio|triton|pytorch-triton|nvidia-.+)")
SOURCE_FILES = ("pyproject.toml", "README.md")  # besides orchestrator/: what the wheel is built from
WHEEL_EPOCH = "315532800"  # SOURCE_DATE_EPOCH: the same sources build the same wheel bytes
# Of package.deadline_s, what infer does not get: starting Python, stopping the servers after
# the deadline's write (up to 20 s), copying and checking OUTPUT.
IMAGE_RESERVE_S = 60.0
# The wheels' platforms: x86_64 glibc up to 2.35 (pytorch/pytorch is Ubuntu 22.04); pip expands manylinux2014.
WHEEL_PLATFORMS = (*(f"manylinux_2_{minor}_x86_64" for minor in range(35, 16, -1)), "manylinux2014_x86_64")


@dataclass(frozen=True)
class ImageServer:
    """One model server in the image: a merged model, or a base with the adapters vLLM serves."""

    name: str
    model: Path  # the directory with config.json
    recipes: tuple[Loaded[RoleRecipe], ...]
    adapters: tuple[Path, ...] = ()


@dataclass
class PackageSummary:
    out: Path
    files: int = 0
    linked: int = 0
    copied: int = 0
    written: int = 0  # generated files (recipes, run.sh, wheel, ...) new or changed
    unchanged: int = 0
    removed: int = 0
    total_bytes: int = 0
    folders: dict[str, int] = field(default_factory=dict)  # model folder -> bytes
    memory: list[ServerEstimate] = field(default_factory=list)
    peak_gb: float = 0.0
    budget_gb: float = 0.0

    def lines(self) -> list[str]:
        return [
            *(f"model {folder}: {_size(n)}" for folder, n in self.folders.items()),
            *(f"memory {s.describe()}" for s in self.memory),
            f"memory peak {self.peak_gb:.1f} GB of package.gpu_memory_gb {self.budget_gb:g}",
            f"{self.files} files, {_size(self.total_bytes)}: {self.linked} hard-linked, {self.copied} copied, "
            f"{self.written} written, {self.unchanged} unchanged, {self.removed} removed",
            f"image folder: {self.out} (docker build -t submission {self.out})",
        ]


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------- what the image serves


def image_servers(answers: list[Loaded[RoleRecipe]], evaluate: Loaded[RoleRecipe]) -> list[ImageServer]:
    """The servers `orchestrator infer` starts for these recipes, as it groups them: every model
    an adapter of one base with serve.infer_backend vllm: one server; else Answer adapters of one
    base on vLLM share one server, and every other model is served as serve.weights says (its
    merged model, or its base with the adapter on top).
    Refuses a model that is not trained, merged or downloaded yet."""
    every = [*answers, evaluate]
    if one_server([x.recipe for x in every]):  # every model an adapter of one base: one vLLM server
        check_adapters(every)
        return [_base_server(every)]
    groups: dict[Any, list[Loaded[RoleRecipe]]] = {}
    for loaded in answers:
        groups.setdefault(lora_group_key(loaded.recipe) or id(loaded), []).append(loaded)
    servers = []
    for group in groups.values():
        if len(group) > 1:
            check_adapters(group)
            servers.append(_base_server(group))
        else:
            servers.append(_single(group[0]))
    servers.append(_single(evaluate))
    for s in servers:
        if not (s.model / "config.json").exists():
            raise UserError(f"no base model in {s.model} to serve the adapter of {s.name} on: "
                            f"run `{command_for(s.recipes[0], 'download')}`")
    return servers


def _base_server(group: list[Loaded[RoleRecipe]]) -> ImageServer:
    """One vLLM server of a base with the adapters of `group`."""
    return ImageServer("+".join(x.recipe.run_name for x in group), model_path(group[0].recipe), tuple(group),
                       tuple(role_paths(x.recipe).adapter for x in group))


def _single(loaded: Loaded[RoleRecipe]) -> ImageServer:
    """The server of one role's model: its merged model, or its base with the adapter on top."""
    paths = role_paths(loaded.recipe)
    if served_weights(loaded.recipe) == "adapter":
        if not is_trained(paths):
            raise UserError(f"{paths.adapter} has no trained adapter (no {ADAPTER_FILE}) to serve on the base: "
                            f"run `{command_for(loaded, 'train')}` first")
        return ImageServer(loaded.recipe.run_name, model_path(loaded.recipe), (loaded,), (paths.adapter,))
    if not (paths.merged / "config.json").exists():
        raise UserError(f"{paths.merged} has no merged model: run `{command_for(loaded, 'merge')}` first")
    return ImageServer(loaded.recipe.run_name, paths.merged, (loaded,))


VLLM_GPU_UTIL = {"api": 0.7, "serve": 0.9}  # the defaults of LLaMA-Factory's vllm_gpu_util and of `vllm serve`


def _gpu_util(s: ImageServer) -> float | None:
    """The share of the card a vLLM server takes (None: not vLLM); several adapters: `vllm serve`."""
    recipe = s.recipes[0].recipe
    if recipe.serve.infer_backend != "vllm":
        return None
    given = recipe.serve.args.get("vllm_gpu_util")
    return float(given) if given is not None else VLLM_GPU_UTIL["serve" if len(s.adapters) > 1 else "api"]


def memory_estimates(servers: list[ImageServer], pipeline: PipelineRecipe) -> list[ServerEstimate]:
    """Each server's GPU memory from its config.json, the recipe's vllm_maxlen, the requests in
    flight (inference.concurrency; the huggingface backend runs serve.max_concurrent at once)."""
    estimates = []
    for s in servers:
        recipe = s.recipes[0].recipe
        config_path = s.model / "config.json"
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            if not isinstance(config, dict):
                raise ConfigError("is not a JSON object")
            max_len = int(recipe.serve.args.get("vllm_maxlen") or VLLM_DEFAULT_MAXLEN)
            sequences = pipeline.inference.concurrency
            if recipe.serve.infer_backend == "huggingface":
                sequences = min(sequences, recipe.serve.max_concurrent)
            adapters = [(a / "adapter_model.safetensors").stat().st_size for a in s.adapters]
            inf = pipeline.inference  # an Answer request asks for its samples at once (n)
            samples = max(inf.votes, inf.extra_votes) if any(x.recipe.role == "answer" for x in s.recipes) else 1
            estimates.append(server_estimate(s.name, config, max_len=max_len, sequences=sequences,
                                             adapter_bytes=adapters, samples=samples, gpu_util=_gpu_util(s)))
        except (OSError, ValueError) as e:  # ConfigError is a ValueError, as is bad JSON
            raise UserError(f"{config_path}: {e} (the memory estimate reads the model's shape from it)") from None
    return estimates


# ---------------------------------------------------------------- the files


def _model_files(s: ImageServer) -> tuple[dict[str, Path], dict[str, str]]:
    """Where each model file goes in DIR -> its source, and each role recipe's model.path there.
    A role's manifest.json goes too: serving an adapter takes it as the sign of a finished training."""
    files: dict[str, Path] = {}
    model_paths: dict[str, str] = {}
    base = f"runs/{s.recipes[0].recipe.run_name}/merged" if not s.adapters else f"models/{s.model.name}"
    files |= _tree(s.model, base)
    for loaded in s.recipes:
        paths = role_paths(loaded.recipe)
        run = f"runs/{loaded.recipe.run_name}"
        if paths.manifest.is_file():
            files[f"{run}/manifest.json"] = paths.manifest.resolve()
        if s.adapters:  # the adapter's own files; checkpoint-N/ folders are training state
            files |= {f"{run}/adapter/{f.name}": f.resolve() for f in sorted(paths.adapter.iterdir()) if f.is_file()}
        model_paths[loaded.recipe.run_name] = base
    return files, model_paths


def _tree(root: Path, dest: str) -> dict[str, Path]:
    """Every file under `root` (followed through a symlinked root), hidden ones left out."""
    root = root.resolve()
    return {f"{dest}/{f.relative_to(root).as_posix()}": f.resolve()
            for f in sorted(root.rglob("*"))
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(root).parts)}


def _frozen_role(loaded: Loaded[RoleRecipe], model_dir: str, weights: str) -> str:
    raw = copy.deepcopy(loaded.raw)
    raw.setdefault("model", {})["path"] = model_dir
    raw.setdefault("serve", {})["weights"] = weights  # as decided here: auto would read the merged model's config
    header = (f"# {loaded.recipe.role} recipe frozen by `orchestrator package` from {display(loaded.path)}:\n"
              f"# no extends, paths inside the image (model.path is the model it serves).\n")
    return header + yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)


def _frozen_pipeline(loaded: Loaded[PipelineRecipe], answers: list[Loaded[RoleRecipe]],
                     evaluate: Loaded[RoleRecipe], fallback: str | None) -> str:
    recipe = loaded.recipe
    inference = copy.deepcopy(loaded.raw.get("inference") or {})
    names = [f"recipes/{a.recipe.run_name}.yaml" for a in answers]
    inference["answer_models"] = [{"recipe": name, **({"model": m.model} if m.model else {})}
                                  for name, m in zip(names, recipe.inference.answer_models, strict=True)]
    inference["answer_recipe"] = names[0]
    for shorthand in ("answer_url", "answer_model"):  # folded into answer_models
        inference.pop(shorthand, None)
    inference["evaluate_recipe"] = f"recipes/{evaluate.recipe.run_name}.yaml"
    inference["fallback"] = fallback  # the prior, read now: the image holds no training data
    inference["api_key_env"] = None
    if recipe.package.deadline_s is not None:
        inference["deadline_s"] = recipe.package.deadline_s - IMAGE_RESERVE_S
    raw = {"data": {"test": recipe.package.input, "gold": None}, "inference": inference,
           "package": recipe.package.model_dump()}
    header = (f"# The pipeline recipe frozen by `orchestrator package` from {display(loaded.path)}:\n"
              f"# its inference and package sections, the role recipes and paths inside the image.\n")
    return header + yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)


def _requirement_names(requires: list[str] | None, extra: str = "") -> list[Any]:
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for line in requires or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is None or req.marker.evaluate({"extra": extra}):
            out.append(req)
    return out


def pinned_requirements() -> list[str]:
    """`name==version` of everything the project needs, as installed here (the torch stack
    left to the base image). vLLM is not among them: it has an environment of its own in the
    image (vllm.IMAGE_PINS), as on this machine (`make setup-vllm`)."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    todo = _requirement_names(metadata.requires("orchestrator"))
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in pins or TORCH_STACK.fullmatch(name) or name == "orchestrator":
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency this environment does without
        pins[name] = dist.version
        todo += _requirement_names(dist.requires)
        for extra in req.extras:
            todo += _requirement_names(dist.requires, extra)
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


def _pip(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *map(str, args)], capture_output=True, text=True)


def _pip_error(done: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["no output"])[-1]


def download_wheels(requirements: list[str], python: str, cache: Path) -> dict[str, Path]:
    """A wheel of every requirement (`name==version`) for Python `python` on x86_64 Linux -> its
    file in `cache`. Taken from the cache when it has them all (offline), else downloaded into it
    by pip from the configured index; a requirement published only as source is built here with
    pip wheel and must come out pure Python."""
    target = ["--no-deps", "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
              *[a for p in WHEEL_PLATFORMS for a in ("--platform", p)]]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="orchestrator-wheels-") as tmp:
        listed = Path(tmp) / "requirements.txt"
        listed.write_text("".join(f"{r}\n" for r in requirements), encoding="utf-8")
        chosen = Path(tmp) / "chosen"
        pick: tuple[str | Path, ...] = ("download", *target, "--no-index", "--find-links", cache, "-d", chosen, "-r", listed)
        if _pip(*pick).returncode != 0:
            built: set[str] = set()
            while (done := _pip("download", *target, "--find-links", cache, "-d", cache, "-r", listed)).returncode:
                missing = re.search(r"No matching distribution found for (\S+)", done.stdout + done.stderr)
                if not missing or missing.group(1) in built:
                    raise UserError(f"package: downloading the image's wheels for Python {python} failed "
                                    f"(pip: {_pip_error(done)}); run it where the package index is reachable, "
                                    "or pass --no-wheels (then `docker build` downloads them)")
                built.add(source := missing.group(1))
                wheel = _pip("wheel", "--no-deps", "--no-binary", ":all:", "-w", cache, source)
                if "No matching distribution" in wheel.stdout + wheel.stderr:  # no source either: no index
                    raise UserError(f"package: no wheel of {source} for Python {python} could be downloaded "
                                    f"(pip: {_pip_error(done)}); run it where the package index is reachable, "
                                    "or pass --no-wheels (then `docker build` downloads them)")
                if wheel.returncode or not any(cache.glob(f"{_wheel_stem(source)}-*-none-any.whl")):
                    raise UserError(f"package: {source} has no wheel for Python {python} on x86_64 Linux and "
                                    f"does not build as pure Python here (pip: {_pip_error(wheel)}); pin another "
                                    "version, or pass --no-wheels")
            done = _pip(*pick)
            if done.returncode:
                raise UserError(f"package: the image's wheels in {cache} do not cover the requirements "
                                f"(pip: {_pip_error(done)})")
        return {f.name: cache / f.name for f in sorted(chosen.iterdir())}


def _wheel_stem(requirement: str) -> str:
    """The file-name prefix of a requirement's wheels, `Name_With_Underscores-version`."""
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '_', name)}-{version}"


def _docker_ignore(files: list[str]) -> str:
    keep = ["Dockerfile", "run.sh", "MANIFEST", "requirements.txt", "wheels", "templates", "recipes", *files]
    return ("# generated by `orchestrator package`: only what the image needs goes into the build context\n"
            "*\n" + "".join(f"!{k}\n" for k in keep))


# ---------------------------------------------------------------- writing DIR


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _ours(out: Path) -> set[str] | None:
    """The files an earlier `orchestrator package` wrote into `out`; None when `out` is new.
    Refuses a DIR that is not one of ours."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the image")
    manifest = out / "MANIFEST"
    if manifest.is_file():
        lines = manifest.read_text(encoding="utf-8", errors="replace").splitlines()
        if lines and lines[0].startswith(MANIFEST_HEADER):
            return {line.split("  ", 1)[1] for line in lines if line and not line.startswith("#") and "  " in line}
    if any(out.iterdir()):
        raise UserError(f"--out {out} is a folder that `orchestrator package` did not make (no MANIFEST of ours); "
                        "give a new or empty folder")
    return None


def _place(src: Path, dest: Path, summary: PackageSummary) -> None:
    """`dest` as the same bytes as `src`: a hard link where possible, else a copy; a file
    already the same (the same inode, or size and modification time of a copy) is left."""
    if dest.exists():
        a, b = src.stat(), dest.stat()
        if (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev) or (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns):
            summary.unchanged += 1
            return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
        summary.linked += 1
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, tmp)
        summary.copied += 1
    os.replace(tmp, dest)


def _write(dest: Path, data: bytes, summary: PackageSummary, mode: int | None = None) -> None:
    if dest.is_file() and dest.read_bytes() == data:
        summary.unchanged += 1
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_bytes(data)
    if mode is not None:
        tmp.chmod(mode)
    os.replace(tmp, dest)
    summary.written += 1


def package(
    *,
    pipeline: Loaded[PipelineRecipe],
    answers: list[Loaded[RoleRecipe] | None],
    evaluate: Loaded[RoleRecipe] | None,
    out: str | Path,
    wheels: bool = True,
) -> PackageSummary:
    """Write the image folder `out` for the pipeline recipe's inference (`answers[i]`: the loaded
    recipe of `inference.answer_models[i]`, None for an endpoint, which an image cannot reach);
    with `wheels`, every requirement's wheel goes into it too (the build then needs no network)."""
    recipe = pipeline.recipe
    inf = recipe.inference
    for m, loaded in zip(inf.answer_models, answers, strict=True):
        if loaded is None:
            raise UserError(f"{pipeline.where('inference')}: the Answer model {m.url} is an endpoint; the image has "
                            "no network: list role recipes whose models it serves")
    if evaluate is None:
        raise UserError(f"{pipeline.where('inference.evaluate_url')}: inference.evaluate_url {inf.evaluate_url}: "
                        "the image has no network; set it to null so the Evaluate model is served")
    deadline = recipe.package.deadline_s
    if deadline is not None and deadline <= 2 * IMAGE_RESERVE_S:
        raise UserError(f"{pipeline.where('package.deadline_s')}: package.deadline_s {deadline:g} leaves infer no time: "
                        f"the image keeps {IMAGE_RESERVE_S:g} s to start, stop its servers and check the "
                        f"submission; give more than {2 * IMAGE_RESERVE_S:g} (or null: no deadline)")
    served = [a for a in answers if a is not None]
    for a in served:
        if a.recipe.fewshot.k:
            raise UserError(f"{a.where('fewshot.k')}: fewshot.k {a.recipe.fewshot.k}: the image does not carry the "
                            "few-shot pool (the worked examples its prompts are built from) yet; package a recipe "
                            "with fewshot.k 0")
    out = Path(out)
    earlier = _ours(out)

    servers = image_servers(served, evaluate)
    estimates = memory_estimates(servers, recipe)
    together = inf.mode == "pipelined"
    problem = budget_problem(estimates, together=together, budget_gb=recipe.package.gpu_memory_gb)
    if problem:
        raise UserError(f"{pipeline.where('package.gpu_memory_gb')}: {problem}; use a smaller or quantized model "
                        "(merge.export_quantization_bit), a lower serve.args.vllm_maxlen or inference.concurrency, "
                        "or mode staged")
    summary = PackageSummary(out, memory=estimates, peak_gb=peak_gb(estimates, together=together,
                                                                            card_gb=recipe.package.gpu_memory_gb),
                             budget_gb=recipe.package.gpu_memory_gb)

    files: dict[str, Path] = {}
    model_dirs: dict[str, str] = {}
    weights: dict[str, str] = {}
    for s in servers:
        placed, paths = _model_files(s)
        files |= placed
        model_dirs |= paths
        weights |= {name: "adapter" if s.adapters else "merged" for name in paths}
    # runs/<name>/merged, runs/<name>/adapter, models/<base>: each model folder and its size
    folders = sorted({"/".join(k.split("/")[:3 if k.startswith("runs/") else 2]) for k in files
                      if not k.endswith("/manifest.json")})
    summary.folders = {f: sum(src.stat().st_size for k, src in files.items() if k.startswith(f + "/"))
                       for f in folders}
    files |= _tree(SOURCE_ROOT / "templates", "templates")

    generated: dict[str, bytes] = {}
    for loaded in [*served, evaluate]:
        name = loaded.recipe.run_name
        generated[f"recipes/{name}.yaml"] = _frozen_role(loaded, model_dirs[name], weights[name]).encode()
    generated["recipes/pipeline.yaml"] = _frozen_pipeline(pipeline, served, evaluate,
                                                          fallback_letter(recipe, "package")).encode()
    vllm = any(x.recipe.serve.infer_backend == "vllm" for x in [*served, evaluate])
    pins = pinned_requirements()
    generated["requirements.txt"] = (
        "# generated by `orchestrator package`: the versions this project was tested with; torch comes\n"
        "# from the base image\n" + "".join(f"{line}\n" for line in pins)).encode()
    if vllm:  # vLLM's own environment, as `make setup-vllm` makes here (docs/image.md)
        generated["requirements-vllm.txt"] = (
            "# generated by `orchestrator package`: vLLM's own environment in the image (" + IMAGE_PYTHON + "),\n"
            "# the release run here with the transformers it ran with (docs/image.md)\n"
            + "".join(f"{line}\n" for line in IMAGE_PINS)).encode()
    if wheels:
        say("package", f"the wheels of {len(pins)} requirements for Python {recipe.package.python} (kept in {wheel_cache()})")
        files |= {f"wheels/{name}": path for name, path in download_wheels(pins, recipe.package.python,
                                                                           wheel_cache()).items()}
    copied = ["templates", "recipes", *sorted({f.split("/")[0] for f in folders})]  # COPY lines
    with tempfile.TemporaryDirectory(prefix="orchestrator-package-") as tmp:
        wheel = build_wheel(Path(tmp))
        generated[f"wheels/{wheel.name}"] = wheel.read_bytes()
    infer_deadline = yaml.safe_load(generated["recipes/pipeline.yaml"])["inference"].get("deadline_s")
    values: dict[str, Any] = {"source": display(pipeline.path), "out": out, "input": recipe.package.input,
                              "output": recipe.package.output,
                              "deadline": "none" if infer_deadline is None else f"{infer_deadline:g} s"}
    generated["Dockerfile"] = render("package/Dockerfile.j2", base_image=recipe.package.base_image,
                                     wheel=wheel.name, folders=copied, offline=wheels, vllm_python=IMAGE_PYTHON if vllm else None,
                                     **values).encode()
    generated["run.sh"] = render("package/run.sh.j2", **values).encode()
    manifests = sorted(k for k in files if k.endswith("/manifest.json"))
    generated[".dockerignore"] = _docker_ignore([*folders, *manifests]).encode()

    out.mkdir(parents=True, exist_ok=True)
    for rel, src in files.items():
        _place(src, out / rel, summary)
    for rel, data in generated.items():
        _write(out / rel, data, summary, 0o755 if rel == "run.sh" else None)
    for rel in sorted((earlier or set()) - set(files) - set(generated)):  # what an earlier package needed
        (out / rel).unlink(missing_ok=True)
        summary.removed += 1
        for parent in (out / rel).parents:
            if parent == out or any(parent.iterdir()):
                break
            parent.rmdir()

    listed = sorted([*files, *generated])
    sums = [(rel, _sha256(out / rel)) for rel in listed]
    summary.files = len(listed) + 1
    summary.total_bytes = sum((out / rel).stat().st_size for rel in listed)
    manifest = [f"{MANIFEST_HEADER} the submission image of {display(pipeline.path)}; "
                "check it with `sha256sum -c MANIFEST`",
                *(f"# {folder}: {_size(n)}" for folder, n in summary.folders.items()),
                f"# {len(listed)} files, {_size(summary.total_bytes)}",
                *(f"{digest}  {rel}" for rel, digest in sums)]
    atomic_write_text(out / "MANIFEST", "\n".join(manifest) + "\n").chmod(0o644)
    say("package", f"{out}: {summary.files} files")
    return summary
