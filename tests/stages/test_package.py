"""`orchestrator package`: the image folder of the tiny pipeline, checked as Docker and the image
would read it (COPY sources, CMD, .dockerignore, MANIFEST by `sha256sum -c`); packaging again
copies nothing; foreign folders and models too large for the GPU are refused before any copy.
The slow test runs DIR/run.sh as the image would, on the tiny models served by llamafactory-cli."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import QWEN2_72B_AWQ, REPO, read_jsonl

PIPELINE = "recipes/tiny-pipeline.yaml"
NETWORK = re.compile(r"https?://|curl|wget|\bpip\b|\bgit\b|/dev/tcp|\bnc\b|ssh|modelscope|huggingface\.co")


def _merged(project: Path, model: Path, *names: str) -> None:
    for name in names:
        (project / "runs" / name).mkdir(parents=True)
        os.symlink(model, project / "runs" / name / "merged")


def _adapter(project: Path, model: Path, name: str) -> None:
    """runs/<name>/adapter: a LoRA adapter of the tiny model as training leaves it (peft's files,
    the manifest `orchestrator train` writes last)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    run = project / "runs" / name
    peft_model.save_pretrained(run / "adapter")
    (run / "manifest.json").write_text(json.dumps({"recipe": name}))


def _serve_adapter(project: Path) -> None:
    """The tiny Answer recipe serves its adapter on the base; the Evaluate recipe (which extends
    it) its merged model."""
    import yaml

    for name, weights in (("tiny-answer.yaml", "adapter"), ("tiny-evaluate.yaml", "merged")):
        path = project / "recipes" / name
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
        recipe.setdefault("serve", {})["weights"] = weights
        path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")


@pytest.fixture
def merged_project(project: Path, tiny_model_dir: Path) -> Path:
    """The tiny recipes' models merged (the tiny model itself stands for both)."""
    _merged(project, tiny_model_dir, "tiny-answer", "tiny-evaluate")
    return project


def _package(cli, out: Path, *sets: str, wheels: bool = False) -> tuple[int, str, str]:
    """`orchestrator package`; without the wheels unless asked (downloading them takes minutes)."""
    return cli("package", "--out", out, "--pipeline", PIPELINE, "--wheels" if wheels else "--no-wheels",
               *[a for s in sets for a in ("--set", s)])


def _copy_sources(dockerfile: str) -> list[str]:
    sources = []
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *srcs, _dest = shlex.split(line)[1:]
            sources += srcs
    return sources


def run_inside(out: Path, code: str) -> subprocess.CompletedProcess:
    """Python `code` run in the package folder as its project root, as the image would."""
    done = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True, text=True,
                          env={**os.environ, "ORCHESTRATOR_HOME": str(out)})
    assert done.returncode == 0, done.stderr
    return done


def test_the_image_folder_is_what_docker_and_the_image_read(merged_project: Path, cli) -> None:
    out = merged_project / "image"
    code, stdout, err = _package(cli, out)
    assert code == 0, err
    dockerfile = (out / "Dockerfile").read_text()
    assert "\nFROM pytorch/pytorch:" in dockerfile and "\nWORKDIR /app\n" in dockerfile
    assert dockerfile.rstrip().endswith('CMD ["sh", "run.sh"]')
    sources = _copy_sources(dockerfile)
    assert {"requirements.txt", "wheels", "templates", "recipes", "runs", "run.sh", "MANIFEST"} <= set(sources)
    assert all((out / s).exists() for s in sources), [s for s in sources if not (out / s).exists()]
    wheel = re.search(r"wheels/(orchestrator-[\w.]+-py3-none-any\.whl)", dockerfile)
    assert wheel and (out / "wheels" / wheel.group(1)).is_file()

    run_sh = (out / "run.sh").read_text()
    assert not NETWORK.findall(run_sh)  # served on 127.0.0.1 by infer; nothing fetched
    assert "orchestrator data check \"$OUTPUT\" --against \"$INPUT\"" in run_sh
    assert "sleep" not in run_sh  # readiness is polled by infer
    assert subprocess.run(["sh", "-n", out / "run.sh"]).returncode == 0

    # every file listed with its sha256, as sha256sum checks it; the models' sizes in comments
    manifest = (out / "MANIFEST").read_text()
    check = subprocess.run(["sha256sum", "-c", "--strict", "--quiet", "MANIFEST"], cwd=out, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    listed = {line.split("  ", 1)[1] for line in manifest.splitlines() if not line.startswith("#")}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"MANIFEST"}
    assert listed == on_disk
    assert "# runs/tiny-answer/merged: " in manifest and "model runs/tiny-evaluate/merged: " in stdout
    # the models hard-linked from the runs (same inode), not copied
    weights = merged_project / "runs" / "tiny-answer" / "merged" / "model.safetensors"
    assert (out / "runs/tiny-answer/merged/model.safetensors").stat().st_ino == weights.resolve().stat().st_ino

    # only what the image needs goes into the build context
    ignore = (out / ".dockerignore").read_text().splitlines()
    assert "*" in ignore and {"!runs/tiny-answer/merged", "!runs/tiny-evaluate/merged", "!recipes"} <= set(ignore)

    # exact versions, no torch build of this (CPU) machine
    requirements = [line for line in (out / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9._-]*==[\w.+!-]+", line) for line in requirements), requirements
    assert "llamafactory==0.9.5" in requirements
    assert not [line for line in requirements if re.match(r"(torch|torchvision|torchaudio|triton)==|nvidia-", line)]


def test_the_frozen_recipes_load_inside_the_folder_with_no_source_project(merged_project: Path, cli) -> None:
    out = merged_project / "image"
    assert _package(cli, out)[0] == 0
    code = (
        "from orchestrator.core.recipes.loading import load_pipeline, load_role\n"
        "from orchestrator.core.run_folders.role_paths import model_path, role_paths\n"
        "from orchestrator.core.data.fallback import fallback_letter\n"
        "p = load_pipeline('recipes/pipeline.yaml').recipe\n"
        "a = load_role('answer', p.inference.answer_models[0].recipe).recipe\n"
        "e = load_role('evaluate', p.inference.evaluate_recipe).recipe\n"
        "print(fallback_letter(p), p.data.test, p.package.output, model_path(a), role_paths(e).merged)\n"
    )
    done = run_inside(out, code)
    fallback, test, output, answer_model, evaluate_model = done.stdout.split()
    assert re.fullmatch("[A-G]", fallback)  # the prior frozen: the image has no training file
    assert (test, output) == ("/tcdata/round2_test_data.jsonl", "/app/results.jsonl")
    assert Path(answer_model) == out.resolve() / "runs/tiny-answer/merged"
    assert (Path(evaluate_model) / "config.json").is_file()
    assert "\nextends:" not in (out / "recipes" / "tiny-answer.yaml").read_text()


def test_packaging_again_copies_nothing_and_removes_what_is_no_longer_needed(
    merged_project: Path, tiny_model_dir: Path, cli
) -> None:
    _merged(merged_project, tiny_model_dir, "tiny-answer-b")
    out = merged_project / "image"
    two = "inference.answer_models=[{recipe: recipes/tiny-answer.yaml}, {recipe: recipes/tiny-answer-b.yaml}]"
    code, first, err = _package(cli, out, two)
    assert code == 0, err
    assert (out / "runs/tiny-answer-b/merged/config.json").exists()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "MANIFEST"}

    code, again, err = _package(cli, out, two)
    assert code == 0, err
    assert "0 hard-linked, 0 copied, 0 written" in again and " 0 removed" in again
    assert {p: p.stat().st_mtime_ns for p in before} == before

    code, fewer, err = _package(cli, out)  # one Answer model now: tiny-answer-b's files go
    assert code == 0, err
    assert not (out / "runs" / "tiny-answer-b").exists()
    removed = int(re.search(r"(\d+) removed", fewer).group(1))
    assert removed == sum(1 for p in before if "tiny-answer-b" in str(p))
    assert subprocess.run(["sha256sum", "-c", "--strict", "--quiet", "MANIFEST"], cwd=out).returncode == 0


@pytest.mark.parametrize(("setup", "message"), [
    (lambda d: (d / "notes.txt").write_text("mine"), "did not make (no MANIFEST of ours)"),
    (lambda d: (d / "MANIFEST").write_text("abc  notes.txt\n"), "did not make (no MANIFEST of ours)"),
])
def test_a_folder_it_did_not_make_is_refused_untouched(merged_project: Path, cli, setup, message) -> None:
    out = merged_project / "mine"
    out.mkdir()
    setup(out)
    before = sorted(p.name for p in out.iterdir())
    code, _, err = _package(cli, out)
    assert code != 0 and f"Error: --out {out} is a folder that `orchestrator package` {message}" in err
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_file_as_the_folder_is_refused(merged_project: Path, cli) -> None:
    (merged_project / "image").write_text("x")
    code, _, err = _package(cli, merged_project / "image")
    assert code != 0 and "Error: " in err and "is a file" in err


@pytest.mark.parametrize(("sets", "refused"), [
    ((), True),  # 41 GB of weights on a 32 GB GPU
    (("package.gpu_memory_gb=80",), False),
])
def test_a_model_too_large_for_the_gpu_is_refused_before_any_copy(
    project: Path, tiny_model_dir: Path, cli, sets, refused
) -> None:
    _merged(project, tiny_model_dir, "tiny-answer")
    big = project / "runs" / "tiny-evaluate" / "merged"
    big.mkdir(parents=True)  # only its config: a refused package reads nothing else
    (big / "config.json").write_text(json.dumps(QWEN2_72B_AWQ))
    code, out, err = _package(cli, project / "image", *sets)
    if refused:
        assert code != 0 and not (project / "image").exists()
        line = next(line for line in err.splitlines() if line.startswith("Error: "))
        assert "package.gpu_memory_gb 32" in line and "tiny-evaluate: " in line
        assert re.search(r"about (\d+\.\d) GB", line) and float(re.search(r"about (\d+\.\d) GB", line)[1]) > 41
        assert "weights 41." in line
    else:
        assert code == 0, err
        assert re.search(r"memory tiny-evaluate: \d+\.\d GB = weights 41\.\d", out)


@pytest.mark.parametrize(("sets", "message"), [
    (("inference.answer_url=http://127.0.0.1:9/v1", "inference.answer_model=m"), "is an endpoint; the image has no network"),
    (("inference.evaluate_url=http://127.0.0.1:9/v1", "inference.evaluate_model=m"), "the image has no network"),
])
def test_endpoints_are_refused_the_image_has_no_network(merged_project: Path, cli, sets, message) -> None:
    code, _, err = _package(cli, merged_project / "image", *sets)
    assert code != 0 and message in err and not (merged_project / "image").exists()


def test_a_few_shot_answer_recipe_is_refused_the_image_carries_no_pool(merged_project: Path, cli) -> None:
    code, _, err = _package(cli, merged_project / "image", "fewshot.k=2")
    assert code != 0 and "fewshot.k 2: the image does not carry the few-shot pool" in err
    assert not (merged_project / "image").exists()


def test_a_model_not_merged_yet_names_the_command(project: Path, tiny_model_dir: Path, cli) -> None:
    _merged(project, tiny_model_dir, "tiny-answer")
    code, _, err = _package(cli, project / "image")
    assert code != 0
    assert "runs/tiny-evaluate/merged has no merged model: run `orchestrator merge evaluate --recipe " \
           "recipes/tiny-evaluate.yaml` first" in err


def test_an_adapter_on_its_base_ships_the_base_and_the_adapter(tiny_project: Path, tiny_model_dir: Path, cli) -> None:
    _adapter(tiny_project, tiny_model_dir, "tiny-answer")
    _serve_adapter(tiny_project)
    _merged(tiny_project, tiny_model_dir, "tiny-evaluate")
    out = tiny_project / "image"
    code, stdout, err = _package(cli, out)
    assert code == 0, err
    for rel in ("models/tiny-qwen2/model.safetensors", "runs/tiny-answer/adapter/adapter_model.safetensors",
                "runs/tiny-answer/adapter/adapter_config.json", "runs/tiny-answer/manifest.json",
                "runs/tiny-evaluate/merged/model.safetensors"):
        assert (out / rel).is_file(), rel
    assert not (out / "runs/tiny-answer/merged").exists()
    assert re.search(r"memory tiny-answer: .* adapters 0\.0", stdout)  # counted (a few KB)
    assert "model models/tiny-qwen2: " in stdout and "model runs/tiny-answer/adapter: " in stdout
    ignore = (out / ".dockerignore").read_text().splitlines()
    assert {"!models/tiny-qwen2", "!runs/tiny-answer/adapter", "!runs/tiny-answer/manifest.json"} <= set(ignore)
    assert "COPY models /app/models" in (out / "Dockerfile").read_text()
    # inside the folder, the frozen recipe serves the shipped base with the shipped adapter
    code = (
        "import json\n"
        "from orchestrator.core.recipes.loading import load_role\n"
        "from orchestrator.core.run_folders.role_paths import role_paths\n"
        "from orchestrator.core.serving.servers import check_serve, serve_sections\n"
        "loaded = load_role('answer', 'recipes/tiny-answer.yaml')\n"
        "check_serve(loaded, role_paths(loaded.recipe))\n"
        "print(json.dumps(serve_sections(loaded.recipe, role_paths(loaded.recipe))['model']))\n"
    )
    done = run_inside(out, code)
    model = json.loads(done.stdout)
    assert model["model_name_or_path"] == str(out.resolve() / "models" / "tiny-qwen2")
    assert model["adapter_name_or_path"] == str(out.resolve() / "runs" / "tiny-answer" / "adapter")


def test_every_model_an_adapter_of_one_base_on_vllm_is_one_server(tiny_project: Path, tiny_model_dir: Path, cli) -> None:
    for name in ("tiny-answer", "tiny-evaluate"):
        _adapter(tiny_project, tiny_model_dir, name)
    out = tiny_project / "image"
    code, stdout, err = _package(cli, out, "serve.infer_backend=vllm", "serve.weights=adapter")
    assert code == 0, err
    assert re.findall(r"^memory (\S+):", stdout, re.M) == ["tiny-answer+tiny-evaluate"]  # one server, both adapters
    assert [p.name for p in (out / "models").iterdir()] == ["tiny-qwen2"]
    assert not list(out.glob("runs/*/merged"))
    assert not [x for x in (out / "requirements.txt").read_text().splitlines() if x.startswith("vllm")]
    assert (out / "requirements-vllm.txt").read_text().splitlines()[-2:] == ["vllm==0.32.0", "transformers==5.19.0"]
    assert "ENV ORCHESTRATOR_VLLM_PYTHON=/opt/vllm/bin/python" in (out / "Dockerfile").read_text()
    code = (
        "from orchestrator.core.recipes.loading import load_role\n"
        "from orchestrator.core.serving.grouping import one_server\n"
        "print(one_server([load_role(r, f'recipes/tiny-{r}.yaml').recipe for r in ('answer', 'evaluate')]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True, text=True,
                          env={**os.environ, "ORCHESTRATOR_HOME": str(out)})
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr


@pytest.mark.parametrize(("deadline", "infer_deadline", "refused"), [
    (None, None, False), (3600, 3540, False), (120, None, True),
])
def test_the_image_deadline_leaves_time_to_start_stop_and_check(merged_project: Path, cli, deadline, infer_deadline,
                                                               refused) -> None:
    import yaml

    out = merged_project / "image"
    code, _, err = _package(cli, out, *([f"package.deadline_s={deadline}"] if deadline else []))
    if refused:
        assert code != 0 and "package.deadline_s 120 leaves infer no time" in err and not out.exists()
        return
    assert code == 0, err
    frozen = yaml.safe_load((out / "recipes" / "pipeline.yaml").read_text())
    assert frozen["inference"].get("deadline_s") == infer_deadline
    assert f"the recipe's: {infer_deadline or 'none'}" in (out / "run.sh").read_text()


def _target(python: str = "3.11") -> list[str]:
    from orchestrator.stages.package import WHEEL_PLATFORMS

    return ["--only-binary=:all:", "--python-version", python, "--implementation", "cp",
            *[a for p in WHEEL_PLATFORMS for a in ("--platform", p)]]


@pytest.mark.slow
def test_the_folder_holds_every_wheel_the_image_installs_offline(
    merged_project: Path, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`package` (wheels by default) downloads a wheel of every requirement for package.python into
    the folder, and the Dockerfile installs from them with no index; pip resolves the folder's
    requirements from wheels/ alone; packaging again reads the wheel cache only (no index at all)."""
    from packaging.utils import canonicalize_name, parse_wheel_filename

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = merged_project / "image"
    code, _, err = cli("package", "--out", out, "--pipeline", PIPELINE)
    assert code == 0, err
    dockerfile = (out / "Dockerfile").read_text()
    assert "pip install --no-index --no-deps --find-links /app/wheels -r /app/requirements.txt" in dockerfile
    assert "pip install --no-index --no-deps /app/wheels/orchestrator-" in dockerfile
    requirements = [line for line in (out / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    wheels = sorted((out / "wheels").glob("*.whl"))
    found = {(canonicalize_name(n), str(v)) for n, v, _, _ in map(parse_wheel_filename, (w.name for w in wheels))}
    pins = {(canonicalize_name(r.split("==")[0]), r.split("==")[1]) for r in requirements}
    assert found - pins == {("orchestrator", __import__("orchestrator").__version__)} and pins <= found
    assert len(wheels) == len(requirements) + 1  # one wheel each, for Python 3.11 on x86_64 Linux
    listed = {line.split("  ", 1)[1] for line in (out / "MANIFEST").read_text().splitlines() if not line.startswith("#")}
    assert {f"wheels/{w.name}" for w in wheels} <= listed
    assert subprocess.run(["sha256sum", "-c", "--strict", "--quiet", "MANIFEST"], cwd=out).returncode == 0

    # the image's pip, offline: every requirement has its wheel in the folder, for the image's Python
    dry = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps",
                          "--no-index", "--find-links", out / "wheels", *_target(), "-r", out / "requirements.txt"],
                         capture_output=True, text=True, env={**os.environ, "PIP_CONSTRAINT": ""})
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    would = re.search(r"Would install (.+)", dry.stdout)
    assert would and len(would.group(1).split()) == len(requirements)

    # again with no index reachable: the cache has them all, nothing is downloaded or copied
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    code, again, err = cli("package", "--out", out, "--pipeline", PIPELINE)
    assert code == 0, err
    assert " 0 copied, 0 written" in again and " 0 removed" in again


def test_wheels_that_cannot_be_downloaded_are_refused_in_one_line(
    merged_project: Path, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No package index (as with no network) and no cached wheels: one Error line that names the way
    out (--no-wheels), and no folder half written."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    out = merged_project / "image"
    code, _, err = cli("package", "--out", out, "--pipeline", PIPELINE)
    assert code == 2 and not out.exists(), err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert re.match(r"Error: package: no wheel of [\w.-]+==\S+ for Python 3\.11 could be downloaded \(pip: ", errors[0])
    assert errors[0].endswith("or pass --no-wheels (then `docker build` downloads them)")


def test_no_wheels_leaves_the_install_to_the_index(merged_project: Path, cli) -> None:
    out = merged_project / "image"
    assert _package(cli, out)[0] == 0
    assert [w.name for w in (out / "wheels").iterdir()] == [f"orchestrator-{__import__('orchestrator').__version__}-py3-none-any.whl"]
    dockerfile = (out / "Dockerfile").read_text()
    assert "--no-index" not in dockerfile and "RUN python -m pip install -r /app/requirements.txt" in dockerfile


def test_vllm_is_never_pinned_beside_llamafactorys_transformers() -> None:
    from orchestrator.stages.package import pinned_requirements

    lines = pinned_requirements()
    assert not [line for line in lines if line.startswith("vllm")]
    assert "transformers==" + __import__("transformers").__version__ in lines


@pytest.mark.slow
def test_run_sh_answers_ten_problems_as_the_image_would(
    tiny_project: Path, tiny_model_dir: Path, cli, tmp_path: Path
) -> None:
    """DIR/run.sh with the project's venv on PATH (the HF backend through llamafactory-cli api),
    the Answer model an adapter on its base, the Evaluate model merged: OUTPUT passes
    `data check --against INPUT`, and run.sh said so."""
    _adapter(tiny_project, tiny_model_dir, "tiny-answer")
    _serve_adapter(tiny_project)
    _merged(tiny_project, tiny_model_dir, "tiny-evaluate")
    out = tiny_project / "image"
    assert _package(cli, out, "inference.max_tokens=8")[0] == 0
    lines = (REPO / "datasets" / "sample" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:10]
    test = tmp_path / "tcdata" / "test.jsonl"
    test.parent.mkdir()
    test.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "app" / "results.jsonl"
    env = {**os.environ, "INPUT": str(test), "OUTPUT": str(output),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("ORCHESTRATOR_HOME")  # run.sh sets its own: the folder it lives in
    started = time.time()
    done = subprocess.run(["sh", str(out / "run.sh")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{output}: ready to upload for {test}" in done.stdout
    assert f"loading {out.resolve()}/runs/tiny-answer/adapter on the base {out.resolve()}/models/tiny-qwen2" in done.stderr
    assert output.stat().st_mtime > started
    rows = read_jsonl(output)
    assert [r["id"] for r in rows] == [json.loads(line)["id"] for line in lines]
    assert all(q["answer"] in "ABCDEFG" for r in rows for q in r["questions"])
    check = subprocess.run([Path(sys.executable).parent / "orchestrator", "data", "check", output, "--against", test],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr

    # a fresh image given a deadline shorter than its run (here: shorter than starting a server):
    # no server is waited for past it, every question gets the fallback, OUTPUT is complete and checked
    shutil.rmtree(out / "runs" / "infer")
    output.unlink()
    done = subprocess.run(["sh", str(out / "run.sh")], cwd=tmp_path, env={**env, "DEADLINE_S": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{output}: ready to upload for {test}" in done.stdout and "ready: http" not in done.stderr
    trace = read_jsonl(out / "runs" / "infer" / "trace.jsonl")
    assert {r["source"] for r in trace} == {"fallback"} and len(trace) == sum(len(r["questions"]) for r in rows)
