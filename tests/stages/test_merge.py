"""`orchestrator merge` and `check` on a role that serves its adapter: a quantized base is not
merged (one line says why), an explicit merge into one is refused with LLaMA-Factory's reason,
and `check` names what LLaMA-Factory needs installed to load it. No model is loaded."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from helpers import GPTQ, write_base

from orchestrator.core.llamafactory.quantization import CANNOT_MERGE
from orchestrator.core.recipes.loading import load_role
from orchestrator.stages import merge

RECIPE = "recipes/quant.yaml"


def quantized_role(project: Path, quantization: dict | None, weights: str = "auto", trained: bool = True) -> Path:
    """recipes/quant.yaml: the tiny Answer recipe on a base declaring `quantization`, with a
    finished training on disk (an adapter file and its manifest) when `trained`."""
    write_base(project, quantization)
    (project / RECIPE).write_text(f"extends: tiny-answer.yaml\nname: quant\nmodel:\n  path: models/base\n"
                                  f"serve:\n  weights: {weights}\n", encoding="utf-8")
    run = project / "runs" / "quant"
    if trained:
        (run / "adapter").mkdir(parents=True)
        (run / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
        (run / "manifest.json").write_text(json.dumps({"recipe": RECIPE}), encoding="utf-8")
    return run


# (the base's quantization_config, serve.weights, the one line merge prints)
SKIPS = [
    pytest.param(GPTQ, "auto", "skipped: {base} is GPTQ-quantized, which LLaMA-Factory cannot merge into; "
                 "{adapter} is served on it (serve.weights auto, recipes/quant.yaml)", id="gptq-auto"),
    pytest.param({"quant_method": "awq"}, "adapter", "skipped: {base} is AWQ-quantized, which LLaMA-Factory cannot "
                 "merge into; {adapter} is served on it (serve.weights adapter, recipes/quant.yaml)", id="awq-adapter"),
    pytest.param(None, "adapter", "skipped: serve.weights adapter (recipes/quant.yaml): {adapter} is served on its "
                 "base; --set serve.weights=merged merges it", id="plain-adapter"),
]


@pytest.mark.parametrize("quantization, weights, line", SKIPS)
def test_merge_is_skipped_when_the_adapter_is_served(project, cli, quantization, weights, line):
    run = quantized_role(project, quantization, weights)
    code, out, err = cli("merge", "answer", "--recipe", RECIPE)
    assert code == 0, err
    adapter, base = run / "adapter", project / "models" / "base"
    assert err.strip() == f"[merge quant] {line.format(base=base, adapter=adapter)}"
    assert out == f"{adapter}\n"
    # nothing exported, no log (the run folder's lock file aside)
    assert sorted(p.name for p in run.iterdir() if p.name != ".lock") == ["adapter", "manifest.json"]


def test_merge_of_an_untrained_adapter_is_still_refused(project, cli):
    run = quantized_role(project, GPTQ, trained=False)
    code, _, err = cli("merge", "answer", "--recipe", RECIPE)
    assert (code, err) == (2, f"Error: {run}/adapter has no trained adapter (no adapter_model.safetensors): "
                              f"run `orchestrator train answer --recipe {RECIPE}` first\n")


MISSING_GPTQ = ("recipes/quant.yaml: model.path: {base} is GPTQ-quantized (its config.json); LLaMA-Factory "
                "needs gptqmodel>=2.0.0 to load it (`make setup-quant` installs it): The 'gptqmodel>=2.0.0' distribution was not found and is "
                "required by this application. To fix: run `pip install gptqmodel>=2.0.0`.")
MISSING_AWQ = ("recipes/quant.yaml: model.path: {base} is AWQ-quantized (its config.json); LLaMA-Factory "
               "needs autoawq to load it: The 'autoawq' distribution was not found and is required by this "
               "application. To fix: run `pip install autoawq --no-build-isolation`.")
MERGED = (f"recipes/quant.yaml: serve.weights merged: LLaMA-Factory says: {CANNOT_MERGE} ({{base}} is "
          "GPTQ-quantized); set serve.weights: adapter (or auto) to serve the base with the adapter on top")

# gptqmodel is there after `make setup-quant` (which `make test` runs); autoawq never is
GPTQ_MISSING = [] if importlib.util.find_spec("gptqmodel") else [MISSING_GPTQ]
# (the base's quantization_config, serve.weights, the Error lines of `check` and of `merge`)
CHECKS = [
    pytest.param(GPTQ, "auto", GPTQ_MISSING, None, id="gptq-needs-gptqmodel"),
    pytest.param({"quant_method": "awq", "bits": 4}, "auto", [MISSING_AWQ], None, id="awq-needs-autoawq"),
    pytest.param(GPTQ, "merged", [MERGED, *GPTQ_MISSING], [MERGED, *GPTQ_MISSING], id="gptq-merged-explicitly"),
    pytest.param({"quant_method": "fp8"}, "auto", [], None, id="fp8-needs-nothing-more"),
]


@pytest.mark.parametrize("quantization, weights, check_errors, merge_errors", CHECKS)
def test_check_says_what_a_quantized_base_needs(project, cli, quantization, weights, check_errors, merge_errors):
    quantized_role(project, quantization, weights)
    base = project / "models" / "base"
    code, out, err = cli("check", "answer", "--recipe", RECIPE)
    expected = [f"Error: {line.format(base=base)}" for line in check_errors]
    assert (code, err.splitlines()) == ((2, expected) if check_errors else (0, [])), err
    if merge_errors:  # asked to merge into it: refused before anything runs
        code, out, err = cli("merge", "answer", "--recipe", RECIPE)
        assert code == 2 and err.splitlines() == expected
        assert not (project / "runs" / "quant" / "merged").exists()


@pytest.mark.parametrize("role", ["answer", "evaluate"])
def test_the_shipped_gptq_recipes_pass_check(project, cli, role):
    code, out, err = cli("check", role, "--recipe", f"recipes/{role}-32b-gptq.yaml")
    assert code == 0, err
    assert out.startswith(f"ok  {role}:")


def test_the_merged_tokenizers_template_is_checked_again_only_when_its_files_change(
        project: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An up-to-date merge makes sure the merged tokenizer carries the recipe's template (one merged
    before it did); once it does, the tokenizer is not loaded again until a file of it changes."""
    loaded = load_role("answer", "recipes/tiny-answer.yaml")
    folder = project / "runs" / "tiny-answer" / "merged"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)  # merged before it got LF's template
    saves: list[bool] = []
    real = merge.save_template
    monkeypatch.setattr(merge, "save_template", lambda recipe, f: saves.append(real(recipe, f)) or saves[-1])
    assert merge._save_template(loaded, folder) and saves == [True]
    assert not merge._save_template(loaded, folder) and saves == [True]  # remembered: not loaded again
    (folder / "chat_template.jinja").write_text("{{ messages }}", encoding="utf-8")  # a new export, say
    assert merge._save_template(loaded, folder) and saves == [True, True]
    assert "{{ messages }}" not in (folder / "chat_template.jinja").read_text(encoding="utf-8")
