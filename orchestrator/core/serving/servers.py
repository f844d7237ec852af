"""Serving a role's model over the OpenAI API with `llamafactory-cli api`: used by the `serve`
stage, and by `infer` for each model it has no endpoint for. What is served follows
serve.weights: the merged model runs/<name>/merged/, or the base with runs/<name>/adapter/ on
top (`adapter_name_or_path`; what a quantized base needs, since nothing merges into it).

The model, template and backend go into runs/<name>/serve.yaml (checked by LLaMA-Factory's own
parser first); host, port, model name, concurrency and the API key go into the environment,
where LLaMA-Factory reads them, so the key is never written to a file.

A recipe with `serve.infer_backend: vllm` is served by vLLM's own OpenAI server from vLLM's
environment (core/serving/vllm.py), never by LLaMA-Factory's vllm backend: one role's model, or
several LoRA adapters of one base (an ensemble of Answer models) in ONE server, each request
naming its adapter; so are all the models of an infer run (Answer and Evaluate) when every one is
served as an adapter of the same base (core/serving/grouping.py decides).

A server counts as ready once each model it serves has answered one short completion; one that
dies or answers 5xx instead hands the user the first error line of its log (`first_error`).
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.common.api_keys import check_env_name
from orchestrator.core.common.errors import StageFailed, UserError, did_you_mean
from orchestrator.core.common.files import atomic_write_text, read_json_object
from orchestrator.core.common.ledger import text_hash
from orchestrator.core.common.paths import display
from orchestrator.core.common.process import Server, check_host, require_free_port, url_host
from orchestrator.core.common.progress import say
from orchestrator.core.common.render import render
from orchestrator.core.llamafactory.chat_template import JINJA_FILE, TEMPLATE_ARGS, saved_template, template_args, vllm_template_file
from orchestrator.core.llamafactory.configs import finetuning_type, flat
from orchestrator.core.llamafactory.launch import cli_path, no_gpu_env
from orchestrator.core.llamafactory.parser import Accepted, blame, import_parser, known_arguments, parse_args
from orchestrator.core.llamafactory.quantization import config_quantization, quantized_anywhere, served_weights
from orchestrator.core.recipes.loading import Loaded, command_for
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.role_paths import ADAPTER_FILE, RolePaths, is_trained, model_path, role_paths
from orchestrator.core.run_folders.kept import check_out, entries, finished
from orchestrator.core.run_folders.records import MERGED_FILE, read_merged_stamp
from orchestrator.core.run_folders.trained import adapter_identity
from orchestrator.core.serving import vllm
from orchestrator.core.serving.grouping import check_adapters as check_shared_base

# serve.args keys the recipe's other sections decide.
SERVE_DERIVED = {
    "model_name_or_path": "set model.path (serve.weights chooses the merged model or the base + adapter)",
    "adapter_name_or_path": "set serve.weights: adapter to serve runs/<name>/adapter/ on the base",
    "finetuning_type": "set train.finetuning_type instead",
    "template": "set model.template instead",
    "infer_backend": "set serve.infer_backend instead",
    **{key: f"set train.{key}: the model is served the template it was trained with"
       for key in TEMPLATE_ARGS},
}


@dataclass(frozen=True)
class Serving:
    """A model being served: the base URL for an OpenAI client and the model id it lists."""

    url: str  # ends in /v1
    model: str
    server: Server

    def wait(self) -> None:
        """Block until the server exits by itself, which is a failure."""
        proc = self.server.proc
        while proc is not None and proc.poll() is None:
            time.sleep(0.5)
        code = proc.returncode if proc is not None else None
        raise StageFailed(f"{self.server.stage}: exited with code {code}: {reason(self.server)}; "
                          f"its log: {self.server.log_path}")


def serve_sections(recipe: RoleRecipe, paths: RolePaths) -> dict[str, dict[str, Any]]:
    """The api YAML as LLaMA-Factory's headed sections."""
    extra = {k: v for k, v in recipe.serve.args.items() if v is not None}
    if served_weights(recipe) == "adapter":
        weights = {"model_name_or_path": str(model_path(recipe)), "adapter_name_or_path": str(paths.adapter),
                   **finetuning_type(recipe),
                   **qlora_load(recipe)}
    else:
        weights = {"model_name_or_path": str(paths.merged)}
    return {  # the template as training has it (model.template, train.default_system...)
        "model": {**weights, **template_args(recipe), "trust_remote_code": True},
        "inference": {"infer_backend": recipe.serve.infer_backend, **extra},
    }


# A QLoRA adapter served on its base is served on the quantized load it was trained on.
QLORA_KEYS = ("quantization_bit", "quantization_method", "quantization_type", "double_quantization")


def qlora_load(recipe: RoleRecipe) -> dict[str, Any]:
    """The train.quantization_* keys of a QLoRA recipe (none otherwise)."""
    if not recipe.train.get("quantization_bit"):
        return {}
    return {key: recipe.train[key] for key in QLORA_KEYS if recipe.train.get(key) is not None}


def model_version(recipe: RoleRecipe) -> str:
    """A short id of what is served, by content (infer keys its cache on it): the adapter's
    hash its manifest records, or the merged model's identity its stamp records."""
    paths = role_paths(recipe)
    if served_weights(recipe) == "adapter":
        return f"adapter-{adapter_version(recipe)}"
    return merged_identity(paths.merged)


def merged_identity(merged: Path) -> str:
    """What a merge records in merged/orchestrator.json: the hash of what it was made from (the
    adapter's identity, the portable merge.yaml, the calibration data); a stamp written before
    it did is named by its whole text, as before."""
    stamp = read_merged_stamp(merged)
    if stamp is None:  # not made by `merge`: its config names it
        config = merged / "config.json"
        return text_hash(config.read_text(encoding="utf-8", errors="replace")) if config.is_file() else "missing"
    return stamp.identity or text_hash((merged / MERGED_FILE).read_text(encoding="utf-8"))


# Where a run folder remembers the serving config LLaMA-Factory's parser accepted (parser.Accepted).
SERVE_CHECKED = ".llamafactory-accepted-serve"


def check_serve(loaded: Loaded[RoleRecipe], paths: RolePaths) -> None:
    """Refuse a missing merged model (or adapter) and serve.args that LLaMA-Factory's parser rejects
    (not asked again of a config it accepted)."""
    recipe = loaded.recipe
    if not is_trained(paths):
        check_out(paths.run_dir.name)  # a kept training named by `orchestrator runs`: linked into its folder
    if served_weights(recipe) == "adapter":
        if not is_trained(paths):
            kept = [e for e in entries(paths.run_dir) if finished(e)]
            raise UserError(f"{paths.adapter} has no trained adapter (no {ADAPTER_FILE}) to serve on the base: "
                            f"run `{command_for(loaded, 'train')}` first"
                            + (f" (earlier trainings are kept in {display(paths.run_dir / 'kept')}/: `orchestrator runs` "
                               "lists them)" if kept else ""))
        if not (model_path(recipe) / "config.json").exists():
            raise UserError(f"no base model in {model_path(recipe)} to serve the adapter on: "
                            f"run `{command_for(loaded, 'download')}`")
    elif not (paths.merged / "config.json").exists():
        raise UserError(f"{paths.merged} has no merged model: run `{command_for(loaded, 'merge')}` first")
    derived = [f"{loaded.where(f'serve.args.{key}')}: serve.args.{key} is filled in by the orchestrator: "
               f"{SERVE_DERIVED[key]}" for key, value in recipe.serve.args.items() if key in SERVE_DERIVED and value is not None]
    if derived:
        raise UserError(*derived)
    if recipe.serve.infer_backend == "vllm":
        problems = vllm_problems(loaded)
        if problems:
            raise UserError(*problems)
    sections = flat(serve_sections(recipe, paths))
    backend = recipe.serve.infer_backend
    if backend == "vllm":  # vLLM's own server, from its own environment: LLaMA-Factory checks the keys only
        sections["infer_backend"] = backend = "huggingface"
    accepted = Accepted(paths.run_dir / SERVE_CHECKED, recipe.serve.args, sections, code=[__file__], packages=[backend])
    if accepted.before():
        return
    valid = known_arguments("infer") if recipe.serve.args else set()
    unknown = [f"{loaded.where(f'serve.args.{key}')}: serve.args.{key} is not a LLaMA-Factory argument"
               f"{did_you_mean(key, valid)}" for key in recipe.serve.args if key not in valid]
    if unknown:
        raise UserError(*unknown)
    complaint = parse_args(import_parser().get_infer_args, sections)
    if complaint and backend in complaint:  # e.g. the backend's package is not installed
        where = loaded.where("serve.infer_backend")
        raise UserError(f"{where}: serve.infer_backend {backend}: LLaMA-Factory says: {complaint}")
    if complaint:
        raise UserError(blame(loaded, "serve.args", complaint, recipe.serve.args))
    accepted.remember()


KEY_HOW = "require a key: export SERVE_KEY=<a secret> and pass --api-key-env SERVE_KEY"


def _api_key(env_name: str | None) -> str | None:
    if env_name is None:
        return None
    key = os.environ.get(env_name, "").strip()
    if not key:
        raise UserError(f"{env_name} is not set: export {env_name}=... to require that key, or serve without one")
    return key


def _startup(recipe_s: float, limit: float | None) -> float:
    """serve.startup_timeout, cut to `limit` (what is left of a deadline) when given."""
    return recipe_s if limit is None else max(0.0, min(recipe_s, limit))


@contextmanager
def served(
    loaded: Loaded[RoleRecipe], port: int, host: str = "127.0.0.1", api_key_env: str | None = None,
    startup_timeout: float | None = None,
) -> Iterator[Serving]:
    """Serve the model of a role recipe (merged, or base + adapter) until the block ends (Ctrl-C
    included): with vLLM's server for serve.infer_backend vllm, else `llamafactory-cli api`."""
    recipe = loaded.recipe
    paths = role_paths(recipe)
    if api_key_env is not None:
        check_env_name(api_key_env, "--api-key-env")  # before any message that could name it
    check_serve(loaded, paths)
    key = _api_key(api_key_env)
    check_host(host, f"the {recipe.run_name} model server", guarded=key is not None, how=KEY_HOW)
    require_free_port(host, port, f"serve {recipe.run_name}")
    if recipe.serve.infer_backend == "vllm":
        with _vllm_served([loaded], port, host, key, startup_timeout) as serving:
            yield serving
        return
    header = f"generated by `orchestrator serve {recipe.role}` from {display(loaded.path)}; edit the recipe instead"
    config = atomic_write_text(
        paths.run_dir / "serve.yaml",
        render("llamafactory/serve.yaml.j2", header=header, sections=serve_sections(recipe, paths)),
    )
    env = {
        "API_HOST": host,
        "API_PORT": str(port),
        "API_MODEL_NAME": recipe.run_name,
        "API_KEY": key or "",  # empty: no check, even if the caller's environment has an API_KEY
        "MAX_CONCURRENT": str(1 if one_at_a_time(recipe, paths) else recipe.serve.max_concurrent),
        "DISABLE_VERSION_CHECK": "1",
        # no GPU here: gptqmodel's CPU kernel for a GPTQ model, no quantization packages for the others
        # (core/llamafactory/cpu_ddp/sitecustomize.py)
        **no_gpu_env(quantized=quantized_anywhere(recipe)),
    }
    base = f"http://{url_host(host)}:{port}/v1"
    stage = f"serve {recipe.run_name}"
    log = paths.run_dir / "serve.log"
    what = (f"{paths.adapter} on the base {model_path(recipe)}" if served_weights(recipe) == "adapter"
            else str(paths.merged))
    if served_weights(recipe) == "adapter" and qlora_load(recipe):
        what += f" loaded in {recipe.train['quantization_bit']} bits as trained (train.quantization_bit)"
    if one_at_a_time(recipe, paths):
        what += ", one request at a time (a GPTQ model on CPU: gptqmodel's CPU kernel is not thread-safe)"
    say(stage, f"loading {what} with llamafactory-cli api on {host}:{port} (log: {log})")
    with _started([cli_path(), "api", str(config)], stage, log, base, env, paths.run_dir,
                  _startup(recipe.serve.startup_timeout, startup_timeout), key, [recipe.run_name]) as server:
        say(stage, f"ready: {base} (model {recipe.run_name})")
        yield Serving(base, recipe.run_name, server)


def one_at_a_time(recipe: RoleRecipe, paths: RolePaths) -> bool:
    """A GPTQ model served with no GPU answers one request at a time: gptqmodel's CPU kernel (7.2,
    TorchAtenLinear) is not thread-safe (it repacks each layer on its first forward, unguarded: two
    first requests at once repack twice and fail, `"rshift_cpu" not implemented for 'BFloat16'`)."""
    if not no_gpu_env():
        return False
    folder = model_path(recipe) if served_weights(recipe) == "adapter" else paths.merged
    try:
        return config_quantization(folder) == "gptq"
    except OSError:
        return False


# ---------------------------------------------------------------- ready means answered

# A line of a log that names an error: `RuntimeError: ...`, `torch.OutOfMemoryError: ...`
LOG_LEVEL = re.compile(r"(?:INFO|WARNING|DEBUG)\b")
ERROR_LINE = re.compile(r"\b(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception): \S")


def first_error(log_path: Path) -> str | None:
    """The first line naming an error in the server's latest start (after the last `$ command`
    line the Server writes): the engine's own reason, not the traceback's last frames."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    starts = [i for i, line in enumerate(lines) if line.startswith("$ ")]
    for line in lines[starts[-1] + 1 if starts else 0:]:
        line = re.sub(r"^\(\w+ pid=\d+\)\s*", "", line.rsplit("\r", 1)[-1].strip())  # vLLM's `(EngineCore pid=12)`
        if LOG_LEVEL.match(line):  # a warning that merely mentions an error (vLLM's ulimit one names OSError)
            continue
        if ERROR_LINE.search(line) and "Warning" not in line.split(":")[0]:
            return line[:400]
    return None


def reason(server: Server) -> str:
    """Why the server failed: the first error line of its log, else its last line."""
    found = first_error(server.log_path)
    if found:
        return found
    tail = [line for line in server.tail(8) if line.strip()]
    return tail[-1].strip() if tail else "no output"


READY_PROMPT = "1+1="


def answered(base: str, models: list[str], key: str | None, server: Server, timeout: float) -> None:
    """Ask each served model one short completion; a refusal, a 5xx or a server that dies on it
    raises StageFailed with the server's own reason."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    for model in models:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": READY_PROMPT}],
                           "max_tokens": 1, "temperature": 0}).encode()
        request = urllib.request.Request(f"{base}/chat/completions", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=max(timeout, 30.0)) as response:
                response.read()
            continue
        except urllib.error.HTTPError as e:
            got = f"http {e.code}"
            detail = e.read().decode("utf-8", errors="replace")[:300]
        except (urllib.error.URLError, OSError) as e:
            got, detail = "no answer", str(getattr(e, "reason", e))
        time.sleep(0.5)  # let a dying server write its reason
        found = first_error(server.log_path)
        raise StageFailed(f"{server.stage}: {model} did not answer a first request ({got}): "
                          f"{found or detail or reason(server)}; its log: {server.log_path}")


@contextmanager
def _started(
    cmd: list[str], stage: str, log: Path, base: str, env: dict[str, str], cwd: Path, timeout: float,
    key: str | None, models: list[str],
) -> Iterator[Server]:
    """The server started, listing its models, and each of them answering; when it dies while
    in use, its reason is said."""
    server = Server(cmd, stage=stage, log_path=log, ready_url=f"{base}/models", env=env, cwd=cwd,
                    startup_timeout=timeout, headers={"Authorization": f"Bearer {key}"} if key else None)
    try:
        server.start()
    except StageFailed as e:
        found = first_error(log)
        if found:
            raise StageFailed(f"{e.lines[0].split(';')[0]}: {found}; its log: {log}") from None
        raise
    try:
        answered(base, models, key, server, timeout)
        yield server
    finally:
        proc = server.proc
        if proc is not None and proc.poll() is not None:
            say(stage, f"the server exited (code {proc.returncode}) while in use: {reason(server)}; its log: {log}")
        server.stop()


# ---------------------------------------------------------------- vLLM: one server, one or several models

def adapter_version(recipe: RoleRecipe) -> str:
    """The trained adapter's identity by content (core/run_folders/trained.py)."""
    return adapter_identity(role_paths(recipe), recipe.role)


def _adapter_rank(loaded: Loaded[RoleRecipe], paths: RolePaths) -> int:
    """The rank the adapter was trained with, as peft recorded it (check_adapters found the file)."""
    config = paths.adapter / "adapter_config.json"
    try:
        return int(json.loads(config.read_text(encoding="utf-8"))["r"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{config}: no LoRA rank `r` in it (is it peft's?); train the adapter again with "
                        f"`{command_for(loaded, 'train')}`") from None



def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Each tensor's shape from a .safetensors file's header (no weights read; {} when unreadable)."""
    try:
        with path.open("rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(size)) if 0 < size < 100_000_000 else {}
    except (OSError, ValueError, struct.error):
        return {}
    return {k: v["shape"] for k, v in header.items() if isinstance(v, dict) and "shape" in v}


def _expected_dims(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(in, out) of each LoRA target a decoder layer of `config` has."""
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    inter, size = config.get("intermediate_size"), vllm.head_dim(config)
    if not (isinstance(hidden, int) and isinstance(heads, int) and isinstance(inter, int) and size):
        return {}
    kv = int(config.get("num_key_value_heads") or heads)
    q, k = heads * size, kv * size
    return {"q_proj": (hidden, q), "k_proj": (hidden, k), "v_proj": (hidden, k), "o_proj": (q, hidden),
            "gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden)}


def adapter_problem(loaded: Loaded[RoleRecipe]) -> str | None:
    """Why the role's trained adapter does not fit the base it would be served on: another base
    named in its adapter_config.json, or LoRA weights whose shapes the base's layers do not have."""
    recipe = loaded.recipe
    adapter, base = role_paths(recipe).adapter, model_path(recipe)
    named = read_json_object(adapter / "adapter_config.json").get("base_model_name_or_path")
    if isinstance(named, str) and named and Path(named).name.lower() != base.name.lower():
        return (f"{adapter} was trained on {named}, not on the base {base} it would be served on "
                f"({loaded.where('model.path')}): train it again on this base, or set model.path back")
    dims = _expected_dims(read_json_object(base / "config.json"))
    if not dims:
        return None
    for name, shape in safetensors_shapes(adapter / ADAPTER_FILE).items():
        target = next((t for t in dims if f".{t}.lora_" in name), None)
        if target is None or len(shape) != 2:
            continue
        want_in, want_out = dims[target]
        if (".lora_A." in name and shape[1] != want_in) or (".lora_B." in name and shape[0] != want_out):
            return (f"{adapter} does not fit the base {base}: {name} has shape {shape}, the base's {target} "
                    f"takes {want_in} in and gives {want_out} out; train it again on this base")
    return None


def vllm_problems(loaded: Loaded[RoleRecipe]) -> list[str]:
    """What vLLM cannot serve here, known before it starts: vLLM not installed, a head size its
    CPU backend lacks (no GPU), an adapter that does not fit its base."""
    recipe = loaded.recipe
    where = loaded.where("serve.infer_backend")
    problems = []
    if vllm.installed() is None:
        problems.append(f"{where}: serve.infer_backend vllm: vLLM is not installed: run `{vllm.SETUP}`, or set "
                        f"{vllm.PYTHON_ENV} to the python of an environment that has vllm")
    weights = served_weights(recipe)
    folder = model_path(recipe) if weights == "adapter" else role_paths(recipe).merged
    cpu = vllm.cpu_problem(folder if (folder / "config.json").is_file() else model_path(recipe))
    if cpu:
        problems.append(f"{where}: serve.infer_backend vllm: {cpu}")
    if weights == "adapter" and is_trained(role_paths(recipe)):
        misfit = adapter_problem(loaded)
        if misfit:
            problems.append(misfit)
    return problems


def check_adapters(loadeds: list[Loaded[RoleRecipe]]) -> None:
    """Refuse adapters that are not trained yet or do not share one base (core/serving/grouping.py),
    or that vLLM cannot serve here (vllm_problems)."""
    check_shared_base(loadeds)
    problems: list[str] = []
    for loaded in loadeds:
        problems += [p for p in vllm_problems(loaded) if p not in problems]
    if problems:
        raise UserError(*problems)


def chat_template_file(loaded: Loaded[RoleRecipe], merged_model: bool) -> Path:
    """--chat-template: a merged model's own saved template (what `merge` wrote), else
    LLaMA-Factory's template written to runs/<name>/chat_template.jinja."""
    merged = role_paths(loaded.recipe).merged
    if merged_model and saved_template(merged) is not None and (merged / JINJA_FILE).is_file():
        return merged / JINJA_FILE
    return vllm_template_file(loaded)


def vllm_lora_command(loadeds: list[Loaded[RoleRecipe]], host: str, port: int) -> list[str]:
    """vLLM's server for the models of these role recipes: adapters of one base (`--enable-lora
    --lora-modules name=adapter ...`, each named by its recipe's run name), or one merged model
    served as its run name; the first recipe's serve: and distributed: sections set the server.
    Its --chat-template is LLaMA-Factory's template the models were trained with."""
    first: RoleRecipe = loadeds[0].recipe
    merged = len(loadeds) == 1 and served_weights(first) == "merged"  # several: always their adapters
    template = chat_template_file(loadeds[0], merged)
    if merged:
        return vllm.command(first, role_paths(first).merged, template, host, port, name=first.run_name)
    adapters = [(x.recipe.run_name, role_paths(x.recipe).adapter, _adapter_rank(x, role_paths(x.recipe))) for x in loadeds]
    return vllm.command(first, model_path(first), template, host, port, adapters=adapters)


def vllm_lora_env(api_key: str | None) -> dict[str, str]:
    """The server's environment (core/serving/vllm.py)."""
    return vllm.environment(api_key)


@contextmanager
def _vllm_served(
    loadeds: list[Loaded[RoleRecipe]], port: int, host: str, key: str | None, startup_timeout: float | None,
) -> Iterator[Serving]:
    names = [x.recipe.run_name for x in loadeds]
    stage = f"serve {', '.join(names)}"
    cmd = vllm_lora_command(loadeds, host, port)
    base = f"http://{url_host(host)}:{port}/v1"
    paths = role_paths(loadeds[0].recipe)
    log = paths.run_dir / ("serve-lora.log" if len(loadeds) > 1 else "serve-vllm.log")
    model = cmd[cmd.index("--model") + 1]
    what = (f"{len(loadeds)} adapters that share the base {model}" if len(loadeds) > 1
            else f"{model}" + (" with its adapter" if "--enable-lora" in cmd else ""))
    say(stage, f"loading {what} in one vLLM server on {host}:{port} ({cmd[0]}; log: {log})")
    with _started(cmd, stage, log, base, vllm.environment(key), paths.run_dir,
                  _startup(loadeds[0].recipe.serve.startup_timeout, startup_timeout), key, names) as server:
        say(stage, f"ready: {base} ({'adapters' if len(names) > 1 else 'model'} {', '.join(names)})")
        yield Serving(base, names[0], server)


@contextmanager
def served_adapters(
    loadeds: list[Loaded[RoleRecipe]], port: int, host: str = "127.0.0.1", api_key_env: str | None = None,
    startup_timeout: float | None = None,
) -> Iterator[Serving]:
    """Serve the adapters of several role recipes from one vLLM server until the block ends;
    a request names its adapter by the recipe's run name."""
    check_adapters(loadeds)
    key = _api_key(api_key_env)
    stage = f"serve {', '.join(x.recipe.run_name for x in loadeds)}"
    check_host(host, stage, guarded=key is not None, how=KEY_HOW)
    require_free_port(host, port, stage)
    with _vllm_served(loadeds, port, host, key, startup_timeout) as serving:
        yield serving
