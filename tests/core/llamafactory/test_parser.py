"""LLaMA-Factory's parser as the one source of its values: what it resolved for a role's
rendered configs (its defaults included) is kept with its acceptance and read back without
parsing again; and no module of the package carries a copy of one of its defaults."""

from __future__ import annotations

import ast
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.llamafactory import checks
from orchestrator.core.llamafactory.checks import check_roles
from orchestrator.core.llamafactory.parser import argument_default, import_parser
from orchestrator.core.recipes.loading import load_role
from helpers import REPO


@pytest.fixture(scope="module")
def defaults() -> dict[str, Any]:
    """Every LLaMA-Factory argument with a default of its own, by name."""
    parser = import_parser()
    found: dict[str, Any] = {}
    for cls in [*parser._TRAIN_ARGS, *parser._INFER_ARGS]:
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING and f.default is not None:
                found.setdefault(f.name, f.default)
    return found


def copied_defaults(source: str, defaults: dict[str, Any]) -> list[str]:
    """`x.get("name") or D` and `x.get("name", D)` where D (a literal, or a module constant holding
    one) is LLaMA-Factory's own default of the argument `name`: a copy that drifts when it changes."""
    tree = ast.parse(source)
    constants = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                 for t in node.targets if isinstance(t, ast.Name)}

    def literals(expr: ast.AST) -> Iterator[Any]:
        for n in ast.walk(expr):
            if isinstance(n, ast.Constant):
                yield n.value
            elif isinstance(n, ast.Name) and n.id in constants:
                yield from literals(constants[n.id])

    def looked_up(call: ast.AST) -> str | None:
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "get"
                and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
            return call.args[0].value
        return None

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            name, fallbacks = looked_up(node.values[0]), node.values[1:]
        elif isinstance(node, ast.Call) and len(node.args) == 2:
            name, fallbacks = looked_up(node), [node.args[1]]
        else:
            continue
        if name not in defaults:
            continue
        default = defaults[name]
        if any(type(v) is type(default) and v == default for f in fallbacks for v in literals(f)):
            found.append(f"line {node.lineno}: {name} defaults to {default!r}, LLaMA-Factory's own default")
    return found


COPIES = [  # (source, what is found)
    pytest.param('cutoff = recipe.train.get("cutoff_len") or 2048', ["cutoff_len"], id="or-a-literal"),
    pytest.param('n = int(recipe.merge.get("export_size") or 5)', ["export_size"], id="inside-a-call"),
    pytest.param('d = recipe.merge.get("export_device", "cpu")', ["export_device"], id="get-with-a-default"),
    pytest.param('MAXLEN = 4096\nm = serve.args.get("vllm_maxlen") or MAXLEN', ["vllm_maxlen"], id="a-module-constant"),
    pytest.param('t = {"finetuning_type": train.get("finetuning_type") or "lora"}', ["finetuning_type"], id="in-a-dict"),
    pytest.param('r = max(ranks, args.get("vllm_max_lora_rank") or 0)', [], id="not-its-default"),
    pytest.param('cutoff = resolved.train["cutoff_len"]', [], id="read-from-the-parser"),
    pytest.param('x = options.get("cutoff_len")', [], id="no-fallback"),
]


@pytest.mark.parametrize("source, names", COPIES)
def test_a_copied_default_is_found(defaults: dict[str, Any], source: str, names: list[str]) -> None:
    assert [line.split(": ")[1].split()[0] for line in copied_defaults(source, defaults)] == names


def test_no_module_copies_a_llamafactory_default(defaults: dict[str, Any]) -> None:
    """Stages read LLaMA-Factory's values from what its parser resolved (Rendered.resolved)."""
    found = [f"{path.relative_to(REPO)} {line}" for path in sorted((REPO / "orchestrator").rglob("*.py"))
             for line in copied_defaults(path.read_text(encoding="utf-8"), defaults)]
    assert found == []


def test_what_llamafactory_resolved_is_kept_and_read_back(project: Path, private_cache: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Its defaults included; checked again with nothing changed, read back and not parsed."""
    [first] = check_roles([load_role("answer", "recipes/tiny-answer.yaml", ["train.cutoff_len=300"])])
    assert first.resolved is not None
    train, merge = first.resolved.train, first.resolved.merge
    assert train["cutoff_len"] == 300  # the recipe's
    assert merge["export_device"] == argument_default("export_device") == "cpu"  # LLaMA-Factory's, unsaid
    assert train["finetuning_type"] == "lora" and train["output_dir"] == str(first.paths.adapter)
    kept = json.loads((first.paths.run_dir / (checks.CHECKED + ".json")).read_text(encoding="utf-8"))
    assert str(project) not in json.dumps(kept)  # the project folder as a placeholder: a moved project reads it too
    monkeypatch.setattr(checks, "_parsed", lambda *args: pytest.fail("parsed again"))
    monkeypatch.setattr(checks, "import_parser", lambda: pytest.fail("LLaMA-Factory (torch) imported again"))
    [again] = check_roles([load_role("answer", "recipes/tiny-answer.yaml", ["train.cutoff_len=300"])])
    assert again.resolved == first.resolved


def test_the_calibration_sizes_are_resolved_with_the_merge(project: Path, private_cache: Path) -> None:
    [r] = check_roles([load_role("answer", None, ["merge.export_quantization_bit=4",
                                                  "merge.export_quantization_nsamples=16"])])
    assert r.resolved is not None
    assert r.resolved.merge["export_quantization_nsamples"] == 16
    assert r.resolved.merge["export_quantization_maxlen"] == argument_default("export_quantization_maxlen")

