"""`orchestrator serve`: what it refuses before starting anything, and (slow) the real
`llamafactory-cli api` serving the tiny model."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from orchestrator.core.common.process import free_port, port_free
from orchestrator.core.recipes.loading import load_role
from orchestrator.core.run_folders.role_paths import role_paths
from orchestrator.core.serving.endpoints import Endpoint
from orchestrator.core.serving import servers
from orchestrator.core.serving.servers import check_serve, one_at_a_time
from orchestrator.stages.serve import serve
from helpers import GPTQ, write_base

TINY = "recipes/tiny-answer.yaml"
KEY = "sk-SERVE-SECRET-0123456789"


@pytest.fixture
def merged(project: Path, tiny_model_dir: Path) -> Path:
    """A project whose tiny-answer run has a merged model (the tiny model itself)."""
    run = project / "runs" / "tiny-answer"
    run.mkdir(parents=True)
    os.symlink(tiny_model_dir, run / "merged")
    return project


REFUSALS = [
    pytest.param(["answer"], "runs/answer/merged has no merged model: run `orchestrator merge answer` first",
                 id="default-recipe"),
    pytest.param(["evaluate", "--recipe", "recipes/tiny-evaluate.yaml"],
                 "runs/tiny-evaluate/merged has no merged model: "
                 "run `orchestrator merge evaluate --recipe recipes/tiny-evaluate.yaml` first", id="named-recipe"),
    pytest.param(["answer", "--recipe", TINY, "--set", "serve.weights=adapter"],
                 "runs/tiny-answer/adapter has no trained adapter (no adapter_model.safetensors) to serve on the "
                 "base: run `orchestrator train answer --recipe recipes/tiny-answer.yaml` first", id="adapter"),
]


@pytest.mark.parametrize("args, message", REFUSALS)
def test_refuses_without_a_model_to_serve(project, cli, args, message):
    code, out, err = cli("serve", *args)
    assert code == 2
    assert err == f"Error: {project}/{message}\n"
    assert not list((project / "runs").glob("*/serve.*"))  # nothing rendered, nothing started


BAD_ARGS = [
    pytest.param("serve.args.vllm_maxln=5",
                 "--set: serve.args.vllm_maxln is not a LLaMA-Factory argument (did you mean vllm_maxlen?)", id="typo"),
    pytest.param("serve.args.template=qwen",
                 "--set: serve.args.template is filled in by the orchestrator: set model.template instead",
                 id="derived"),
    pytest.param("serve.args.max_new_tokens=abc",
                 "--set: serve.args.max_new_tokens: LLaMA-Factory says: argument --max_new_tokens/--max-new-tokens: "
                 "invalid int value: 'abc'", id="bad-value"),
]


@pytest.mark.parametrize("override, message", BAD_ARGS)
def test_refuses_serve_args_llamafactory_rejects(merged, cli, override, message):
    code, out, err = cli("serve", "answer", "--recipe", TINY, "--set", override)
    assert (code, err) == (2, f"Error: {message}\n")


def test_an_accepted_serving_config_is_parsed_again_only_when_it_changed(merged, private_cache, monkeypatch) -> None:
    """What LLaMA-Factory's parser accepted is remembered in the run folder (parser.Accepted)."""
    loaded = load_role("answer", TINY)
    check_serve(loaded, role_paths(loaded.recipe))
    calls: list[dict] = []
    real = servers.parse_args
    monkeypatch.setattr(servers, "parse_args", lambda fn, args, **kw: calls.append(args) or real(fn, args, **kw))
    check_serve(loaded, role_paths(loaded.recipe))
    assert calls == []
    changed = load_role("answer", TINY, ["serve.args.max_new_tokens=64"])
    check_serve(changed, role_paths(changed.recipe))
    assert [args["max_new_tokens"] for args in calls] == [64]


def test_refuses_an_unset_key_variable_and_a_taken_port(merged, cli, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    code, out, err = cli("serve", "answer", "--recipe", TINY, "--api-key-env", "NO_SUCH_KEY")
    assert code == 2 and err.startswith("Error: NO_SUCH_KEY is not set")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        code, out, err = cli("serve", "answer", "--recipe", TINY, "--port", port)
    taken_message = (
        f"serve tiny-answer: port {port} on 127.0.0.1 is taken; "
        "stop what uses it or pick another with --port N"
    )
    assert (code, err) == (2, f"Error: {taken_message}\n")


@pytest.mark.parametrize("args", [[], ["--recipe", TINY]], ids=["no-merged-model", "merged-model"])
def test_a_pasted_key_in_api_key_env_is_never_printed(merged, cli, args):
    """`--api-key-env sk-...`: refused before anything else, without repeating the key."""
    code, out, err = cli("serve", "answer", *args, "--api-key-env", KEY)
    assert code == 2 and KEY not in out + err
    assert err == ("Error: --api-key-env must be the NAME of an environment variable holding the key "
                   "(e.g. DEEPSEEK_API_KEY), not the key itself\n")


def _get(url: str, key: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, {}
    except OSError:  # not listening (yet)
        return 0, {}


async def _chat(url: str, model: str, key: str):
    async with Endpoint(url, model, key, max_retries=0) as endpoint:
        return await endpoint.complete("你好", max_tokens=4)


@pytest.mark.slow
def test_serves_the_tiny_model_behind_a_key_and_stops_it(merged, monkeypatch):
    monkeypatch.setenv("SERVE_KEY", KEY)
    with serve(load_role("answer", TINY), port=0, block=False, api_key_env="SERVE_KEY") as serving:
        proc = serving.server.proc
        assert serving.model == "tiny-answer"
        assert _get(f"{serving.url}/models")[0] == 401
        status, body = _get(f"{serving.url}/models", KEY)
        assert status == 200 and [m["id"] for m in body["data"]] == ["tiny-answer"]
        reply = asyncio.run(_chat(serving.url, serving.model, KEY))
        assert reply.finish_reason in {"length", "stop"}
        port = int(serving.url.rsplit(":", 1)[1].split("/")[0])
    assert proc.poll() is not None and port_free("127.0.0.1", port)
    run = merged / "runs" / "tiny-answer"
    config = (run / "serve.yaml").read_text(encoding="utf-8")
    assert f"model_name_or_path: {run / 'merged'}\ntemplate: qwen\n" in config
    assert "infer_backend: huggingface" in config
    for path in (run / "serve.yaml", run / "serve.log"):
        assert KEY not in path.read_text(encoding="utf-8")


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_cli_serve_on_ipv6_runs_until_sigterm_and_leaves_no_orphan(merged):
    """`serve --host ::1`: before the fix every port on ::1 was refused as taken."""
    port = free_port("::1")
    env = {**os.environ, "ORCHESTRATOR_HOME": str(merged)}
    cmd = [sys.executable, "-m", "orchestrator", "serve", "answer", "--recipe", TINY, "--port", str(port), "--host", "::1"]
    proc = subprocess.Popen(cmd, cwd=merged, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: [lines.append(line) for line in proc.stderr], daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any(f"ready: http://[::1]:{port}/v1" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        assert _get(f"http://[::1]:{port}/v1/models")[0] == 200
        config = str(merged / "runs" / "tiny-answer" / "serve.yaml")
        assert _processes_mentioning(config)  # llamafactory-cli api is up
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Interrupted." in "".join(lines)
    assert port_free("::1", port)
    assert _processes_mentioning(config) == []


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3"])
def test_beyond_loopback_needs_a_key(merged, cli, host, monkeypatch):
    """An exposed `llamafactory-cli api` without a key serves anyone: refused before anything starts."""
    code, out, err = cli("serve", "answer", "--recipe", TINY, "--host", host)
    assert (code, out) == (2, "")
    assert err == (f"Error: the tiny-answer model server would listen on {host} open to anyone who reaches it: "
                   "require a key: export SERVE_KEY=<a secret> and pass --api-key-env SERVE_KEY, "
                   "or keep the default host 127.0.0.1\n")
    assert not (merged / "runs/tiny-answer/serve.yaml").exists()


def test_beyond_loopback_with_a_key_only_warns(merged, monkeypatch, capsys):
    from orchestrator.core.common.process import check_host

    check_host("0.0.0.0", "the tiny-answer model server", guarded=True, how="unused")
    assert capsys.readouterr().err == "Warning: the tiny-answer model server listens on 0.0.0.0: reachable from other machines.\n"
    check_host("127.0.0.1", "x", guarded=False, how="unused")  # loopback: nothing to guard


@pytest.mark.parametrize("weights", ["adapter", "merged"])
def test_a_qlora_adapter_is_served_on_the_4_bit_load_it_trained_on(project: Path, weights: str) -> None:
    from orchestrator.core.run_folders.role_paths import role_paths
    from orchestrator.core.serving.servers import serve_sections

    sets = ["train.quantization_bit=4", "train.quantization_type=nf4", f"serve.weights={weights}"]
    recipe = load_role("answer", "recipes/tiny-answer.yaml", sets).recipe
    model = serve_sections(recipe, role_paths(recipe))["model"]
    quantized = {k: v for k, v in model.items() if k.startswith("quantization_")}
    assert quantized == ({"quantization_bit": 4, "quantization_type": "nf4"} if weights == "adapter" else {})


# (serve.weights, the base's quantization, the merged model's, CUDA_VISIBLE_DEVICES, warmed up)
WARM_UPS = [
    pytest.param("adapter", GPTQ, None, "", True, id="gptq-base-adapter-no-gpu"),
    pytest.param("merged", None, GPTQ, "", True, id="gptq-export-no-gpu"),
    pytest.param("adapter", GPTQ, None, "0", False, id="gptq-base-on-a-gpu"),
    pytest.param("adapter", None, None, "", False, id="plain-base"),
    pytest.param("merged", GPTQ, None, "", False, id="merged-from-a-plain-copy"),
    pytest.param("adapter", {"quant_method": "awq"}, None, "", False, id="awq"),
    pytest.param("merged", None, "missing", "", False, id="no-merged-model-yet"),
]


@pytest.mark.parametrize("weights, base, merged_quant, visible, expected", WARM_UPS)
def test_a_gptq_model_on_cpu_answers_one_request_at_a_time(
    project: Path, monkeypatch: pytest.MonkeyPatch, weights: str, base: dict | None, merged_quant, visible: str,
    expected: bool,
) -> None:
    # gptqmodel's CPU kernel is not thread-safe (it repacks a layer on its first forward)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    write_base(project, base)
    loaded = load_role("answer", TINY, ["model.path=models/base", f"serve.weights={weights}"])
    paths = role_paths(loaded.recipe)
    if merged_quant != "missing":
        paths.merged.mkdir(parents=True)
        config = {"model_type": "qwen2", **({"quantization_config": merged_quant} if merged_quant else {})}
        (paths.merged / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert one_at_a_time(loaded.recipe, paths) is expected
