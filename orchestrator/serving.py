"""Serving a role's merged model over the OpenAI API with `llamafactory-cli api`: used by the
`serve` stage, and by `infer` for each model it has no endpoint for.

The model, template and backend go into runs/<name>/serve.yaml (checked by LLaMA-Factory's own
parser first); host, port, model name, concurrency and the API key go into the environment,
where LLaMA-Factory reads them, so the key is never written to a file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from orchestrator.endpoints import check_env_name
from orchestrator.errors import StageFailed, UserError, did_you_mean
from orchestrator.files import atomic_write_text
from orchestrator.ledger import text_hash
from orchestrator.llamafactory import RolePaths, cli_path, flat, role_paths
from orchestrator.process import Server, check_host, require_free_port
from orchestrator.progress import say
from orchestrator.recipes import Loaded, RoleRecipe, command_for, display
from orchestrator.render import render

# serve.args keys the recipe's other sections decide.
SERVE_DERIVED = {
    "model_name_or_path": "the merged model runs/<name>/merged/ is always served",
    "adapter_name_or_path": "the merged model runs/<name>/merged/ is always served",
    "template": "set model.template instead",
    "infer_backend": "set serve.infer_backend instead",
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
        raise StageFailed(
            f"{self.server.stage}: exited with code {code}; its log: {self.server.log_path}",
            *[f"  {line}" for line in self.server.tail(8)],
        )


def serve_sections(recipe: RoleRecipe, paths: RolePaths) -> dict[str, dict[str, Any]]:
    """The api YAML as LLaMA-Factory's headed sections."""
    extra = {k: v for k, v in recipe.serve.args.items() if v is not None}
    return {
        "model": {
            "model_name_or_path": str(paths.merged),
            "template": recipe.model.template,
            "trust_remote_code": True,
        },
        "inference": {"infer_backend": recipe.serve.infer_backend, **extra},
    }


def model_version(paths: RolePaths) -> str:
    """A short id of the merged model that changes with every merge (infer keys its cache on it)."""
    stamp = paths.merged / "orchestrator.json"  # written by each merge
    if stamp.exists():
        return text_hash(stamp.read_text(encoding="utf-8"))
    config = paths.merged / "config.json"
    return text_hash(str(config.stat().st_mtime_ns)) if config.exists() else "missing"


def check_serve(loaded: Loaded[RoleRecipe], paths: RolePaths) -> None:
    """Refuse a missing merged model and serve.args that LLaMA-Factory's parser rejects."""
    from orchestrator.llamafactory import blame, import_parser, known_arguments, parse_args

    recipe = loaded.recipe
    if not (paths.merged / "config.json").exists():
        raise UserError(f"{paths.merged} has no merged model: run `{command_for(loaded, 'merge')}` first")
    problems = []
    valid: set[str] | None = None
    for key, value in recipe.serve.args.items():
        dotted = f"serve.args.{key}"
        if key in SERVE_DERIVED and value is not None:
            problems.append(f"{loaded.where(dotted)}: {dotted} is filled in by the orchestrator: {SERVE_DERIVED[key]}")
            continue
        valid = valid or known_arguments("infer")
        if key not in valid:
            hint = did_you_mean(key, valid)
            problems.append(f"{loaded.where(dotted)}: {dotted} is not a LLaMA-Factory argument{hint}")
    if problems:
        raise UserError(*problems)
    complaint = parse_args(import_parser().get_infer_args, flat(serve_sections(recipe, paths)))
    backend = recipe.serve.infer_backend
    if complaint and backend in complaint:  # e.g. the backend's package is not installed
        where = loaded.where("serve.infer_backend")
        raise UserError(f"{where}: serve.infer_backend {backend}: LLaMA-Factory says: {complaint}")
    if complaint:
        raise UserError(blame(loaded, "serve.args", complaint, recipe.serve.args))


def _api_key(env_name: str | None) -> str | None:
    if env_name is None:
        return None
    key = os.environ.get(env_name, "").strip()
    if not key:
        raise UserError(f"{env_name} is not set: export {env_name}=... to require that key, or serve without one")
    return key


def _connect_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host`."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


@contextmanager
def served(
    loaded: Loaded[RoleRecipe], port: int, host: str = "127.0.0.1", api_key_env: str | None = None
) -> Iterator[Serving]:
    """Serve the merged model of a role recipe until the block ends (Ctrl-C included)."""
    recipe = loaded.recipe
    paths = role_paths(recipe)
    if api_key_env is not None:
        check_env_name(api_key_env, "--api-key-env")  # before any message that could name it
    check_serve(loaded, paths)
    key = _api_key(api_key_env)
    check_host(host, f"the {recipe.run_name} model server")
    require_free_port(host, port, f"serve {recipe.run_name}")
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
        "MAX_CONCURRENT": str(recipe.serve.max_concurrent),
        "DISABLE_VERSION_CHECK": "1",
    }
    base = f"http://{_connect_host(host)}:{port}/v1"
    stage = f"serve {recipe.run_name}"
    log = paths.run_dir / "serve.log"
    say(stage, f"loading {paths.merged} with llamafactory-cli api on {host}:{port} (log: {log})")
    with Server(
        [cli_path(), "api", str(config)],
        stage=stage,
        log_path=log,
        ready_url=f"{base}/models",
        env=env,
        cwd=paths.run_dir,
        startup_timeout=recipe.serve.startup_timeout,
        headers={"Authorization": f"Bearer {key}"} if key else None,
    ) as server:
        say(stage, f"ready: {base} (model {recipe.run_name})")
        yield Serving(base, recipe.run_name, server)
