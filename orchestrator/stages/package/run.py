"""`package()`: the checks (no endpoint, a deadline that leaves time, no few-shot pool, the GPU
memory), then DIR written from what the other modules give."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_text
from orchestrator.core.common.paths import SOURCE_ROOT, display
from orchestrator.core.common.progress import say
from orchestrator.core.common.render import render
from orchestrator.core.data.fallback import fallback_letter
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import PipelineRecipe, RoleRecipe
from orchestrator.core.serving.memory import budget_problem, peak_gb
from orchestrator.stages.package.contents import (
    IMAGE_RESERVE_S,
    docker_ignore,
    frozen_pipeline,
    frozen_role,
    model_files,
    tree_files,
)
from orchestrator.stages.package.folder import MANIFEST_HEADER, PackageSummary, earlier_files, place, sha256, size_text, write_bytes
from orchestrator.core.serving.vllm import IMAGE_PINS, IMAGE_PYTHON
from orchestrator.stages.package.requirements import build_wheel, download_wheels, pinned_requirements, wheel_cache
from orchestrator.stages.package.servers import image_servers, memory_estimates


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
    earlier = earlier_files(out)

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
        placed, paths = model_files(s)
        files |= placed
        model_dirs |= paths
        weights |= {name: "adapter" if s.adapters else "merged" for name in paths}
    # runs/<name>/merged, runs/<name>/adapter, models/<base>: each model folder and its size
    folders = sorted({"/".join(k.split("/")[:3 if k.startswith("runs/") else 2]) for k in files
                      if not k.endswith("/manifest.json")})
    summary.folders = {f: sum(src.stat().st_size for k, src in files.items() if k.startswith(f + "/"))
                       for f in folders}
    files |= tree_files(SOURCE_ROOT / "templates", "templates")

    generated: dict[str, bytes] = {}
    for loaded in [*served, evaluate]:
        name = loaded.recipe.run_name
        generated[f"recipes/{name}.yaml"] = frozen_role(loaded, model_dirs[name], weights[name]).encode()
    generated["recipes/pipeline.yaml"] = frozen_pipeline(pipeline, served, evaluate,
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
                                     wheel=wheel.name, folders=copied, offline=wheels,
                                     vllm_python=IMAGE_PYTHON if vllm else None, **values).encode()
    generated["run.sh"] = render("package/run.sh.j2", **values).encode()
    manifests = sorted(k for k in files if k.endswith("/manifest.json"))
    generated[".dockerignore"] = docker_ignore([*folders, *manifests]).encode()

    out.mkdir(parents=True, exist_ok=True)
    for rel, src in files.items():
        place(src, out / rel, summary)
    for rel, data in generated.items():
        write_bytes(out / rel, data, summary, 0o755 if rel == "run.sh" else None)
    for rel in sorted((earlier or set()) - set(files) - set(generated)):  # what an earlier package needed
        (out / rel).unlink(missing_ok=True)
        summary.removed += 1
        for parent in (out / rel).parents:
            if parent == out or any(parent.iterdir()):
                break
            parent.rmdir()

    listed = sorted([*files, *generated])
    sums = [(rel, sha256(out / rel)) for rel in listed]
    summary.files = len(listed) + 1
    summary.total_bytes = sum((out / rel).stat().st_size for rel in listed)
    manifest = [f"{MANIFEST_HEADER} the submission image of {display(pipeline.path)}; "
                "check it with `sha256sum -c MANIFEST`",
                *(f"# {folder}: {size_text(n)}" for folder, n in summary.folders.items()),
                f"# {len(listed)} files, {size_text(summary.total_bytes)}",
                *(f"{digest}  {rel}" for rel, digest in sums)]
    atomic_write_text(out / "MANIFEST", "\n".join(manifest) + "\n").chmod(0o644)
    say("package", f"{out}: {summary.files} files")
    return summary
