"""Shared fixtures: a throwaway project directory, the tiny model, the CLI."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import ADAPTER_ONLY, REPO, install_fake_vllm, make, trained_copy, with_makefile  # noqa: E402

# One OpenMP thread a process. The slow tests run several torch processes at once (xdist workers,
# two servers, torchrun's ranks) on a few cores, and torch's threads spin waiting for each other:
# three tiny trainings side by side on this 2-core machine took 40.6 s of train_runtime each with
# the default threads, 6.3 s with one (benchmarks/bench_threads.py). torchrun does so for its ranks.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _with_recipes_and_sample(root: Path) -> Path:
    shutil.copytree(REPO / "recipes", root / "recipes")
    shutil.copytree(REPO / "datasets" / "sample", root / "datasets" / "sample")
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root with the shipped recipes and sample, as the working directory."""
    _with_recipes_and_sample(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def spaced_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project ready for make (with_makefile) in a folder with a space and a quote in its name."""
    root = _with_recipes_and_sample(tmp_path / "my pro'ject")
    monkeypatch.chdir(root)
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(root))
    return with_makefile(root)


# the longest of the slow tests (a module's, or a group's run on one worker), longest first:
# handed out first, so no worker is left alone with one of them at the end (docs/benchmarks.md)
LONGEST_FIRST = ("tests/e2e/test_vllm_engine.py", "tests/e2e/test_adapter_serving.py", "tests/e2e/test_experiments.py",
                 "tests/e2e/test_nothing_lost.py", "tests/e2e/test_gpu_check.py", "tests/e2e/test_distributed.py",
                 "tests/e2e/test_own_data.py", "tests/e2e/test_quantized.py", "tests/e2e/test_preference_walk.py",
                 "tests/e2e/test_make_memory.py", "tests/stages/infer/test_deadline.py")  # (the last two: fast)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that start from the session's trained pair (made_eval) run after the others: under
    pytest-xdist, made_eval_early has made it by then. Within each part, the longest first."""
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=lambda item: ("made_eval" in getattr(item, "fixturenames", ()), rank(item)))


def once(tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str,
         build: Callable[[Path], dict | None]) -> tuple[Path, dict | None]:
    """`build(folder)` run once per test run, also across pytest-xdist's processes: the first to ask
    builds `folder` under a lock, the others wait and read what it returned (JSON, or None). A
    build that failed is tried again by the next to ask."""
    if worker_id == "master":
        folder = tmp_path_factory.mktemp(name)
        return folder, build(folder)
    root = tmp_path_factory.getbasetemp().parent  # shared by the run's workers
    folder, built = root / name, root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            built.write_text(json.dumps(build(folder)))
    return folder, json.loads(built.read_text())


@pytest.fixture(scope="session", autouse=True)
def machine_cache(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[Path]:
    """The run's own machine cache (XDG_CACHE_HOME) for every test and the processes it starts:
    what LLaMA-Factory's parser accepted (parser.Accepted) is shared by the run's tests, never
    taken from an earlier run; the downloaded wheels stay the user's (linked)."""
    from orchestrator.core.common.paths import cache_dir

    wheels = cache_dir("wheels")
    base = tmp_path_factory.getbasetemp()
    cache = (base if worker_id == "master" else base.parent) / "cache"
    (cache / "orchestrator").mkdir(parents=True, exist_ok=True)
    wheels.mkdir(parents=True, exist_ok=True)
    with suppress(FileExistsError):
        (cache / "orchestrator" / "wheels").symlink_to(wheels)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        yield cache


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine cache of the test's own: nothing another test's parser accepted is known."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The tiny Qwen2-architecture model, built once per test session."""
    from orchestrator.stages.tiny_model import build_tiny_model

    folder, _ = once(tmp_path_factory, worker_id, "models", lambda f: build_tiny_model(f / "tiny-qwen2") and None)
    return folder / "tiny-qwen2"


@pytest.fixture(scope="session")
def gptq_model_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The tiny model quantized for real (4-bit GPTQ) by `orchestrator tiny-model DIR --quantize
    gptq`, built once per test session."""
    def build(folder: Path) -> None:
        out = folder / "tiny-qwen2-gptq"
        done = subprocess.run([str(REPO / ".venv" / "bin" / "orchestrator"), "tiny-model", str(out), "--quantize", "gptq"],
                              capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip() == str(out)

    folder, _ = once(tmp_path_factory, worker_id, "gptq-model", build)
    return folder / "tiny-qwen2-gptq"


@pytest.fixture(scope="session")
def wide_tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The tiny model 128 wide (whole GPTQ groups of 128 in every layer: what a CPU serves a GPTQ
    export of), built once per test session."""
    from orchestrator.stages.tiny_model import QUANTIZED_WIDTH, build_tiny_model

    folder, _ = once(tmp_path_factory, worker_id, "wide-model",
                     lambda f: build_tiny_model(f / "tiny-qwen2-wide", width=QUANTIZED_WIDTH) and None)
    return folder / "tiny-qwen2-wide"


def _with_tiny_model(project: Path, tiny_model_dir: Path) -> Path:
    (project / "models").mkdir()
    os.symlink(tiny_model_dir, project / "models" / "tiny-qwen2")
    return project


@pytest.fixture
def tiny_project(project: Path, tiny_model_dir: Path) -> Path:
    """A project whose models/tiny-qwen2 is the tiny model (what the tiny recipes use)."""
    return _with_tiny_model(project, tiny_model_dir)


@dataclass
class Made:
    project: Path
    clean: bool  # the runs folder did not exist before
    done: subprocess.CompletedProcess


def _make_eval(tiny_model_dir: Path, environ: dict[str, str]) -> Callable[[Path], dict]:
    """made_eval's build: `make eval RECIPE=tiny` in a new tiny project under `folder`, in `environ`."""
    def build(folder: Path) -> dict:
        root = with_makefile(_with_tiny_model(_with_recipes_and_sample(folder / "project"), tiny_model_dir))
        clean = not (root / "runs").exists()
        done = make(root, "eval", "RECIPE=tiny", timeout=1800, environ=environ)
        return {"clean": clean, "args": done.args, "returncode": done.returncode, "stdout": done.stdout,
                "stderr": done.stderr}

    return build


@pytest.fixture(scope="session")
def made_eval(tmp_path_factory: pytest.TempPathFactory, worker_id: str, tiny_model_dir: Path) -> Made:
    """`make eval RECIPE=tiny` once per test run, in a tiny project with no runs folder: it
    distils, builds both datasets, trains and merges both tiny models, then answers and scores
    the held-out problems. The tests that need trained models take them from here (read only)."""
    folder, made = once(tmp_path_factory, worker_id, "made", _make_eval(tiny_model_dir, dict(os.environ)))
    assert made is not None
    done = subprocess.CompletedProcess(made["args"], made["returncode"], made["stdout"], made["stderr"])
    return Made(folder / "project", made["clean"], done)


@pytest.fixture(scope="session")
def made_adapter_all(tmp_path_factory: pytest.TempPathFactory, worker_id: str, made_eval: Made) -> Made:
    """made_eval's trained pair less its merged models (and eval run), both roles serving base +
    adapter (serve.weights adapter in tiny-answer.yaml, which tiny-evaluate.yaml extends), then
    `make -j4 all RECIPE=tiny`: infer and score from the adapters, nothing merged. Once per test run
    for the tests of serving adapters (xdist_group "adapters": one process builds it while the other
    goes on); they copy it (helpers.trained_copy)."""
    assert made_eval.done.returncode == 0, made_eval.done.stderr[-3000:]

    def build(folder: Path) -> dict:
        root = trained_copy(made_eval.project, folder / "project",
                            without=("runs/tiny-answer/merged", "runs/tiny-evaluate/merged", "runs/tiny-eval"))
        recipe = root / "recipes/tiny-answer.yaml"
        text = recipe.read_text(encoding="utf-8")
        assert ADAPTER_ONLY[0] in text
        recipe.write_text(text.replace(*ADAPTER_ONLY), encoding="utf-8")
        done = make(root, "-j4", "all", "RECIPE=tiny", timeout=1800)
        return {"args": done.args, "returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}

    folder, made = once(tmp_path_factory, worker_id, "adapter-all", build)
    assert made is not None
    done = subprocess.CompletedProcess(made["args"], made["returncode"], made["stdout"], made["stderr"])
    return Made(folder / "project", False, done)


@pytest.fixture(scope="session", autouse=True)
def made_eval_early(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, worker_id: str,
                    machine_cache: Path) -> Iterator[None]:
    """Under pytest-xdist the first process (gw0) starts made_eval's `make eval` in a thread as its
    first test starts: the pair trains while the processes go on with the other tests, and the
    tests that need it (ordered last) find it made, where one process used to wait minutes for the
    other to make it. A build that failed there is tried again by the made_eval fixture."""
    needed = any("made_eval" in getattr(item, "fixturenames", ()) for item in request.session.items)
    if worker_id != "gw0" or not needed:
        yield
        return
    build = _make_eval(request.getfixturevalue("tiny_model_dir"), dict(os.environ))

    def run() -> None:
        with suppress(Exception):  # the fixture builds it again, and fails with the reason
            once(tmp_path_factory, worker_id, "made", build)

    thread = threading.Thread(target=run, name="made_eval", daemon=True)
    thread.start()
    yield
    thread.join()


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """Run `orchestrator ARGS...` in-process: (exit code, stdout, stderr)."""
    from orchestrator.cli import run

    def invoke(*args: str) -> tuple[int, str, str]:
        code = run([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def fake_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in vLLM python in $ORCHESTRATOR_VLLM_PYTHON (helpers.FAKE_VLLM); returns the file noting its calls."""
    calls = tmp_path / "vllm-calls.jsonl"
    monkeypatch.setenv("ORCHESTRATOR_VLLM_PYTHON", str(install_fake_vllm(tmp_path / "bin", calls)))
    return calls
