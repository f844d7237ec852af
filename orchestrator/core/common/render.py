"""Jinja rendering, sandboxed and strict: every template variable must be given."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import SOURCE_ROOT

TEMPLATES_DIR = SOURCE_ROOT / "templates"


def to_yaml(value: Any) -> str:
    """One YAML scalar or flow collection, as LLaMA-Factory's OmegaConf reads it back."""
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6).strip().removesuffix("\n...").removesuffix("...").strip()


@cache
def environment(templates_dir: Path = TEMPLATES_DIR) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(templates_dir)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["yaml"] = to_yaml
    env.filters["json"] = lambda v: json.dumps(v, ensure_ascii=False)
    return env


def render(name: str, *, templates_dir: Path = TEMPLATES_DIR, **values: Any) -> str:
    """Render templates/<name> with `values`; a missing variable is a UserError naming it.
    The sandbox refuses `__class__`-style access and calls that mutate, as a SecurityError."""
    try:
        return environment(templates_dir).get_template(name).render(**values)
    except UndefinedError as e:
        raise UserError(f"templates/{name}: {e.message} (the template uses a value that is not given)") from None
    except TemplateError as e:
        lineno = getattr(e, "lineno", None)
        where = f"templates/{name}" + (f":{lineno}" if lineno else "")
        raise UserError(f"{where}: {e.message or e}") from None
    except (ArithmeticError, LookupError, TypeError, ValueError) as e:  # {{ 1/0 }}, range(10**9), ...
        raise UserError(f"templates/{name}: {type(e).__name__}: {e}") from None
