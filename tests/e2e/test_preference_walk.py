"""Issue 44's walk through the make door: `make answer-model` with the DPO recipe builds the
pairs from the SFT model, trains DPO with the SFT model as reference and merges; again, nothing;
and `orchestrator preference`, the same chain as one command, finds every step up to date."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import make, trained_copy

pytestmark = pytest.mark.slow

DPO = ("RECIPE=tiny", "ANSWER_RECIPE=recipes/tiny-answer-dpo.yaml")


def test_make_answer_model_with_the_dpo_recipe_then_nothing_to_do(made_eval, tmp_path: Path) -> None:
    """From the session's trained pair (made_eval: the SFT model trained and merged), the planner
    judges the SFT chain up to date, samples the pairs from the merged SFT model, trains DPO on it
    (LLaMA-Factory's rewards 0 at step 1: the reference is the SFT model) and merges; the same
    call again runs nothing. One sample a question (the shipped recipe takes 4) keeps it cheap."""
    assert made_eval.done.returncode == 0, made_eval.done.stderr[-3000:]
    project = trained_copy(made_eval.project, tmp_path / "trained", without=("runs/tiny-eval",))
    recipe = project / "recipes" / "tiny-answer-dpo.yaml"
    text = recipe.read_text(encoding="utf-8")
    assert "  samples: 4\n" in text
    recipe.write_text(text.replace("  samples: 4\n", "  samples: 1\n"), encoding="utf-8")

    done = make(project, "answer-model", *DPO, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for stage in ("distill", "dataset-train_answer_instruct", "train-tiny-answer", "merge-tiny-answer"):
        assert f"[run] {stage}: up to date" in out, out  # the SFT model is the session's, not retrained
    ran = [line for line in out.splitlines() if line.startswith("$ orchestrator")]
    assert ran == ["$ orchestrator dataset answer --recipe recipes/tiny-answer-dpo.yaml --pipeline recipes/tiny-pipeline.yaml",
                   "$ orchestrator train answer --recipe recipes/tiny-answer-dpo.yaml",
                   "$ orchestrator merge answer --recipe recipes/tiny-answer-dpo.yaml --pipeline recipes/tiny-pipeline.yaml"], out

    pairs = json.loads((project / "datasets" / "pref_tiny_answer.json").read_text(encoding="utf-8"))
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    info = json.loads((project / "datasets" / "dataset_info.json").read_text(encoding="utf-8"))
    assert info["pref_tiny_answer"]["ranking"] is True
    run = project / "runs" / "tiny-answer-dpo"
    train_yaml = (run / "train.yaml").read_text(encoding="utf-8")
    assert f"model_name_or_path: {project / 'runs' / 'tiny-answer' / 'merged'}" in train_yaml  # the reference
    assert "stage: dpo" in train_yaml and "ref_model" not in train_yaml
    history = json.loads((run / "adapter" / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
    steps = [h for h in history if "rewards/margins" in h]
    assert steps[0]["step"] == 1 and steps[0]["rewards/chosen"] == steps[0]["rewards/rejected"] == 0.0
    assert (run / "merged" / "config.json").is_file()
    assert any(s["rewards/margins"] != 0.0 for s in steps[1:])  # and it trains
    assert "first logged step 1: rewards/accuracies 0.0000, rewards/chosen 0.0000" in out
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    sft = json.loads((project / "runs" / "tiny-answer" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["inputs"]["sft_model"] == sft["adapter_hash"] and manifest["data"]["dataset"]["kind"] == "preference"
    assert manifest["rewards"]["first"] == {"step": 1, **{f"rewards/{k}": 0.0 for k in
                                                      ("chosen", "rejected", "margins", "accuracies")}}

    again = make(project, "answer-model", *DPO, timeout=600)
    assert again.returncode == 0 and "$ orchestrator" not in again.stdout, again.stdout  # nothing asked or trained
    assert "[run] train-tiny-answer-dpo: up to date" in again.stdout, again.stdout

    # the one-command chain (`orchestrator preference`): each step up to date, nothing asked or trained
    chain = subprocess.run([str(project / ".venv" / "bin" / "orchestrator"), "preference", "--recipe",
                            "recipes/tiny-answer-dpo.yaml", "--pipeline", "recipes/tiny-pipeline.yaml"],
                           cwd=project, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "ORCHESTRATOR_HOME": str(project)})
    assert chain.returncode == 0, chain.stderr[-3000:]
    assert "SFT model" in chain.stdout and "0 asked now" in chain.stdout and "launching" not in chain.stderr
    assert "dpo model" in chain.stdout and chain.stdout.count("up to date") >= 2, chain.stdout
