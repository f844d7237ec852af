"""Every experiment kept (issue 45), with the real llamafactory-cli and make, from the session's
trained pair serving its adapters (conftest's made_adapter_all), copied: a --set variant trains
beside the recipe's model, never over it; the recipe edited to the variant's values links it and
trains nothing; edited back, its own model comes back and nothing is trained or asked; `make all`
afterwards trains nothing and asks nothing; `orchestrator runs` lists them, a kept one is served
by its name, two are compared by name, one is pruned; a moved project keeps every identity."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import make, trained_copy

pytestmark = pytest.mark.slow


def _orchestrator(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(root / ".venv/bin/orchestrator"), *args], cwd=root, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "ORCHESTRATOR_HOME": str(root)})


def _requests(done: subprocess.CompletedProcess) -> int:
    import re

    return sum(int(n) for n in re.findall(r"requests sent\s+(\d+)", done.stdout + done.stderr))


@pytest.mark.xdist_group("adapters")
def test_variants_are_kept_side_by_side_and_going_back_costs_nothing(made_adapter_all, tmp_path: Path) -> None:
    assert made_adapter_all.done.returncode == 0, made_adapter_all.done.stderr[-3000:]
    root = trained_copy(made_adapter_all.project, tmp_path / "project")
    run = root / "runs/tiny-answer"
    weights = (run / "adapter/adapter_model.safetensors").read_bytes()
    manifest = (run / "manifest.json").read_text()
    recipe = root / "recipes/tiny-answer.yaml"
    as_read = recipe.read_text()

    # a --set variant: its own run folder; the recipe's model untouched
    variant = _orchestrator(root, "train", "answer", "--recipe", "recipes/tiny-answer.yaml", "--set", "train.max_steps=5")
    assert variant.returncode == 0, variant.stderr[-3000:]
    [folder] = [p for p in (root / "runs").iterdir() if p.name.startswith("tiny-answer@")]
    assert (folder / "adapter/adapter_model.safetensors").is_file()
    assert json.loads((folder / "manifest.json").read_text())["steps"] == 5
    assert (run / "adapter/adapter_model.safetensors").read_bytes() == weights and (run / "manifest.json").read_text() == manifest

    # the recipe edited to the variant's values: the variant's training linked, nothing trained
    recipe.write_text(as_read.replace("max_steps: 60", "max_steps: 5"))
    edited = _orchestrator(root, "train", "answer", "--recipe", "recipes/tiny-answer.yaml")
    assert edited.returncode == 0 and "launching" not in edited.stderr, edited.stderr[-3000:]
    assert f"trained before on these inputs in {folder}" in edited.stderr
    [entry] = (run / "kept").iterdir()
    assert (entry / "adapter/adapter_model.safetensors").read_bytes() == weights  # the recipe's model, kept

    # edited back: its model comes back by a rename, nothing trained; make all trains and asks nothing
    recipe.write_text(as_read)
    back = _orchestrator(root, "train", "answer", "--recipe", "recipes/tiny-answer.yaml")
    assert back.returncode == 0 and "launching" not in back.stderr and "is back from" in back.stderr, back.stderr[-3000:]
    assert (run / "adapter/adapter_model.safetensors").read_bytes() == weights
    again = make(root, "all", "RECIPE=tiny")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "launching" not in again.stderr and _requests(again) == 0, again.stdout[-3000:]

    # the table: the recipe's model, the variant (what differs, scored once it is), the kept one
    kept_name = f"tiny-answer~{next((run / 'kept').iterdir()).name[:8]}"
    listed = _orchestrator(root, "runs")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert {"tiny-answer", folder.name, kept_name, "tiny-evaluate"} <= set(lines), listed.stdout
    assert "train.max_steps 60 -> 5" in lines[folder.name] and "train.max_steps 60 -> 5" in lines[kept_name]
    assert " (runs/tiny-infer)" in lines["tiny-answer"]  # make all scored it

    # the variant answers by its name, is scored, and the two are compared by name
    infer = _orchestrator(root, "infer", "--out-dir", "runs/variant-infer", "--limit", "2",
                          "--answer-recipe", folder.name, "--evaluate-recipe", "recipes/tiny-evaluate.yaml")
    assert infer.returncode == 0, infer.stderr[-3000:]
    scored = _orchestrator(root, "score", "runs/variant-infer/submission.jsonl", "--out-dir", "runs/variant-infer")
    assert scored.returncode == 0, scored.stderr[-3000:]
    compared = _orchestrator(root, "compare", "tiny-answer", folder.name)
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert "runs/tiny-infer" in compared.stdout and "runs/variant-infer" in compared.stdout

    # a moved project: the same names, identities and nothing to train
    moved = tmp_path / "elsewhere" / "project"
    shutil.copytree(root, moved, symlinks=True, copy_function=shutil.copy)
    there = _orchestrator(moved, "runs")
    assert [line.split()[0] for line in there.stdout.splitlines()] == [line.split()[0] for line in listed.stdout.splitlines()]
    same = _orchestrator(moved, "train", "answer", "--recipe", "recipes/tiny-answer.yaml", "--set", "train.max_steps=5")
    assert same.returncode == 0 and "up to date" in same.stderr and "launching" not in same.stderr, same.stderr[-3000:]

    # prune: the kept one goes, the recipe's model stays
    pruned = _orchestrator(moved, "runs", "prune", kept_name)
    assert pruned.returncode == 0 and "removed runs/tiny-answer/kept/" in pruned.stdout, pruned.stderr
    assert not any((moved / "runs/tiny-answer/kept").iterdir())
    assert (moved / "runs/tiny-answer/adapter/adapter_model.safetensors").read_bytes() == weights
