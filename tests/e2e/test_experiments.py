"""Every experiment kept (issue 45), with the real llamafactory-cli and make, from the session's
trained pair serving its adapters (conftest's made_adapter_all), copied, typing docs/experiments.md's
lines: a --set variant trains beside the recipe's model, never over it; the recipe edited to the
variant's values links it and trains nothing; edited back, its own model comes back; the variant's
pipeline (`orchestrator run all --set`) infers and scores in runs/tiny-infer@<hash>/, the main
submission untouched; `make all` afterwards trains nothing and asks nothing, nor does the variant
again; `orchestrator runs` lists them, two runs and two models are compared by name, one is pruned;
a moved project keeps every identity."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, make, trained_copy

pytestmark = pytest.mark.slow


def _orchestrator(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(root / ".venv/bin/orchestrator"), *args], cwd=root, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "ORCHESTRATOR_HOME": str(root)})


def _docs_lines() -> list[str]:
    """The commands of docs/experiments.md's `Variant runs` block, as a user types them."""
    text = (REPO / "docs/experiments.md").read_text(encoding="utf-8")
    block = text.split("## Variant runs", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def _type(root: Path, line: str) -> subprocess.CompletedProcess:
    """One documented line: `orchestrator ...` from the project's venv, `make ...` as make runs it."""
    import shlex

    program, *args = shlex.split(line)
    return make(root, *args) if program == "make" else _orchestrator(root, *args)


def _requests(done: subprocess.CompletedProcess) -> int:
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

    main_submission = (root / "runs/tiny-infer/submission.jsonl").read_bytes()
    typed = _docs_lines()

    # docs/experiments.md, line 1: a --set variant, its own run folder; the recipe's model untouched
    variant = _type(root, typed[0])
    assert variant.returncode == 0, variant.stderr[-3000:]
    [folder] = [p for p in (root / "runs").iterdir() if p.name.startswith("tiny-answer@")]
    variant_hash = folder.name.partition("@")[2]
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

    # edited back: its model comes back by a rename, nothing trained
    recipe.write_text(as_read)
    back = _orchestrator(root, "train", "answer", "--recipe", "recipes/tiny-answer.yaml")
    assert back.returncode == 0 and "launching" not in back.stderr and "is back from" in back.stderr, back.stderr[-3000:]
    assert (run / "adapter/adapter_model.safetensors").read_bytes() == weights

    # line 2: the variant's pipeline, its infer and score beside the main ones (runs/tiny-infer untouched)
    whole = _type(root, typed[1])
    assert whole.returncode == 0, whole.stderr[-3000:] + whole.stdout[-3000:]
    assert f"[run] infer-tiny-infer@{variant_hash}: " in whole.stdout and _requests(whole) > 0
    assert (root / f"runs/tiny-infer@{variant_hash}/report.md").is_file()
    assert (root / "runs/tiny-infer/submission.jsonl").read_bytes() == main_submission

    # line 3: make all trains nothing and asks nothing: the main models and submission as they were
    again = _type(root, typed[2])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "launching" not in again.stderr and _requests(again) == 0, again.stdout[-3000:]
    assert (root / "runs/tiny-infer/submission.jsonl").read_bytes() == main_submission
    assert (run / "adapter/adapter_model.safetensors").read_bytes() == weights

    # line 4: back to the variant: nothing trained, nothing asked
    revisited = _type(root, typed[3])
    assert revisited.returncode == 0, revisited.stderr[-3000:]
    assert "launching" not in revisited.stderr and _requests(revisited) == 0, revisited.stdout[-3000:]
    assert f"[run] infer-tiny-infer@{variant_hash}: up to date" in revisited.stdout

    # line 5: the two runs compared by name
    compared = _type(root, typed[4].replace("<hash>", variant_hash))
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert f"runs/tiny-infer@{variant_hash}" in compared.stdout and re.search(r"runs/tiny-infer(?![@\w/-])", compared.stdout)

    # the table: the recipe's model, the variant (what differs, scored), the kept one; the runs
    kept_name = f"tiny-answer~{next((run / 'kept').iterdir()).name[:8]}"
    listed = _orchestrator(root, "runs")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:] if line.strip()}
    assert {"tiny-answer", folder.name, kept_name, "tiny-evaluate", "tiny-infer", f"tiny-infer@{variant_hash}"} <= set(lines), listed.stdout
    assert "train.max_steps 60 -> 5" in lines[folder.name] and "train.max_steps 60 -> 5" in lines[kept_name]
    assert " (runs/tiny-infer)" in lines["tiny-answer"] and f" (runs/tiny-infer@{variant_hash})" in lines[folder.name]

    # two models compared by name: their newest scored runs
    by_model = _orchestrator(root, "compare", "tiny-answer", folder.name)
    assert by_model.returncode == 0, by_model.stderr[-3000:]
    assert f"runs/tiny-infer@{variant_hash}" in by_model.stdout

    # a moved project: the same names, identities and nothing to train
    moved = tmp_path / "elsewhere" / "project"
    shutil.copytree(root, moved, symlinks=True, copy_function=shutil.copy)
    there = _orchestrator(moved, "runs")
    assert [line.split()[:1] for line in there.stdout.splitlines()] == [line.split()[:1] for line in listed.stdout.splitlines()]
    same = _orchestrator(moved, "train", "answer", "--recipe", "recipes/tiny-answer.yaml", "--set", "train.max_steps=5")
    assert same.returncode == 0 and "up to date" in same.stderr and "launching" not in same.stderr, same.stderr[-3000:]

    # prune: the kept one goes, the recipe's model stays
    pruned = _orchestrator(moved, "runs", "prune", kept_name)
    assert pruned.returncode == 0 and "removed runs/tiny-answer/kept/" in pruned.stdout, pruned.stderr
    assert not any((moved / "runs/tiny-answer/kept").iterdir())
    assert (moved / "runs/tiny-answer/adapter/adapter_model.safetensors").read_bytes() == weights
