"""Nothing lost, nothing asked twice (issue 25), with the real llamafactory-cli and make: an
unchanged dataset rebuild and a moved project train nothing and send no request; a corrupt
manifest is one Error line; a retraining keeps the previous adapter, killed or finished; two
commands on one run folder refuse; make -j4 runs one stage at a time. They start from the
session's trained pair (conftest's made_eval, and made_adapter_all serving its adapters), copied."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import make, trained_copy

pytestmark = pytest.mark.slow


def requests_sent(done: subprocess.CompletedProcess) -> int:
    found = re.findall(r"requests sent\s+(\d+)", done.stdout + done.stderr)
    assert found, done.stdout[-2000:]
    return sum(int(n) for n in found)


def nothing_runs(done: subprocess.CompletedProcess) -> None:
    """`orchestrator run` (under make) judged every stage up to date and ran none."""
    planned = [line for line in done.stdout.splitlines() if line.startswith("[run] ")]
    assert planned and all(line.endswith(": up to date") for line in planned), done.stdout[-3000:]
    assert "$ orchestrator " not in done.stdout, done.stdout[-3000:]


def moved_copy(root: Path, to: Path) -> Path:
    """`root` copied elsewhere with fresh timestamps (as a plain cp -r or a new checkout); its
    .venv stays the link to this checkout's, with pyproject.toml older than its stamp as
    with_makefile has it (make would install into it)."""
    shutil.copytree(root, to, symlinks=True, copy_function=shutil.copy)
    os.utime(to / "pyproject.toml", (0, 0))
    return to


def orchestrator(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(root / ".venv/bin/orchestrator"), *args], cwd=root, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "ORCHESTRATOR_HOME": str(root)})


@pytest.mark.xdist_group("adapters")  # conftest's made_adapter_all, built by one process
def test_adapters_are_never_trained_asked_or_lost_twice(made_adapter_all, tmp_path_factory: pytest.TempPathFactory) -> None:
    # `make -j4 all RECIPE=tiny` serving base + adapter, from the trained pair less its merged models
    first = made_adapter_all.done
    assert first.returncode == 0, first.stderr[-3000:]
    assert "is in use by" not in first.stderr
    # the trained adapters are current: the planner says so and nothing is trained
    assert "[run] train-tiny-answer: up to date" in first.stdout and "launching" not in first.stderr
    root = trained_copy(made_adapter_all.project, tmp_path_factory.mktemp("trained") / "project")
    for role in ("answer", "evaluate"):
        assert (root / f"runs/tiny-{role}/adapter/adapter_model.safetensors").exists()
        assert not (root / f"runs/tiny-{role}/merged").exists()
    assert requests_sent(first) > 0

    # the datasets rebuilt with the same content: checked, nothing trained, every answer cached
    for role in ("answer", "evaluate"):
        built = orchestrator(root, "dataset", role, "--recipe", f"recipes/tiny-{role}.yaml",
                             "--pipeline", "recipes/tiny-pipeline.yaml")
        assert built.returncode == 0, built.stderr
    again = make(root, "all", "RECIPE=tiny")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "launching" not in again.stderr
    nothing_runs(again)  # every stage judged up to date by content: nothing trained, nothing asked

    # the project copied to another folder: trains nothing, asks nothing
    moved = moved_copy(root, tmp_path_factory.mktemp("elsewhere") / "project")
    there = make(moved, "all", "RECIPE=tiny")
    assert there.returncode == 0, there.stderr[-3000:]
    assert "launching" not in there.stderr and "training again" not in there.stdout + there.stderr
    nothing_runs(there)

    # a corrupt manifest: one Error line naming it, in every stage that reads it; the adapter stays
    manifest = moved / "runs/tiny-answer/manifest.json"
    kept = manifest.read_text()
    manifest.write_text(kept[: len(kept) // 2])
    error = ("Error: runs/tiny-answer/manifest.json is unreadable (not valid JSON): `orchestrator train answer "
             "--fresh` trains again, keeping runs/tiny-answer/adapter in runs/tiny-answer/kept/")
    for args in (("train", "answer", "--recipe", "recipes/tiny-answer.yaml"),
                 ("infer", "--out-dir", "runs/tiny-infer", "--pipeline", "recipes/tiny-pipeline.yaml",
                  "--answer-recipe", "recipes/tiny-answer.yaml", "--evaluate-recipe", "recipes/tiny-evaluate.yaml")):
        refused = orchestrator(moved, *args)
        # (infer first says where data.test comes from)
        assert refused.returncode != 0 and refused.stderr.strip().splitlines()[-1] == error, refused.stderr[-2000:]
        assert "Traceback" not in refused.stderr and refused.stderr.count("Error:") == 1
    assert (moved / "runs/tiny-answer/adapter/adapter_model.safetensors").exists()
    manifest.write_text(kept)

    # a --set lora_alpha trains a variant in its own run folder: the recipe's adapter untouched, killed or finished
    run = moved / "runs/tiny-answer"
    old_weights = (run / "adapter/adapter_model.safetensors").read_bytes()
    retrain = [str(moved / ".venv/bin/orchestrator"), "train", "answer", "--recipe", "recipes/tiny-answer.yaml",
               "--set", "train.lora_alpha=16", "--set", "train.save_steps=100"]
    # (a run that cannot finish before the Ctrl-C below: 200 steps did once, in 23 s, on a quiet machine)
    env = {**os.environ, "ORCHESTRATOR_HOME": str(moved)}
    # a Ctrl-C as a terminal's: SIGINT at its default (a pytest-xdist worker may ignore it, and a
    # child inherits an ignored SIGINT: the training then ran to its end), then exec: the same pid
    default_int = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execv(sys.argv[1], sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", default_int, *retrain, "--set", "train.max_steps=2000"], cwd=moved, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "launching" in line:
            break
    assert any("lora_alpha" in line or "train_yaml changed" in line for line in seen), seen
    [variant] = [p for p in (moved / "runs").iterdir() if p.name.startswith("tiny-answer@")]
    second = orchestrator(moved, *retrain[1:], "--set", "train.max_steps=2000")
    assert second.returncode != 0
    assert second.stderr.strip().splitlines()[-1] == (
        f"Error: runs/{variant.name} is in use by `orchestrator train answer --recipe recipes/tiny-answer.yaml` "
        f"(pid {proc.pid}): wait "
        "for it to finish (one command at a time per run folder)"), second.stderr
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Interrupted." in err, (proc.returncode, err[-2000:])
    assert (run / "adapter/adapter_model.safetensors").read_bytes() == old_weights
    assert json.loads((run / "manifest.json").read_text())["recipe"]["train"]["lora_alpha"] == 8
    assert not (variant / "adapter/adapter_model.safetensors").exists()

    finished = subprocess.run([*retrain, "--set", "train.max_steps=4"], cwd=moved, env=env, capture_output=True,
                              text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    [done] = [p for p in (moved / "runs").iterdir() if p.name.startswith("tiny-answer@") and p != variant]
    assert json.loads((done / "manifest.json").read_text())["recipe"]["train"]["lora_alpha"] == 16
    assert (run / "adapter/adapter_model.safetensors").read_bytes() == old_weights  # the recipe's own, untouched


def test_a_moved_project_with_merged_models_redoes_nothing(made_eval, tmp_path: Path) -> None:
    """The session's `make eval RECIPE=tiny` project (merged models), copied: nothing trained,
    merged or asked again."""
    assert made_eval.done.returncode == 0, made_eval.done.stderr[-3000:]
    moved = moved_copy(made_eval.project, tmp_path / "mounted" / "elsewhere")
    done = make(moved, "eval", "RECIPE=tiny")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "launching" not in done.stderr and "llamafactory-cli export" not in done.stderr
    nothing_runs(done)  # the planner finds every stage up to date where it now is: nothing is asked


def test_a_venv_made_in_another_folder_is_installed_again(project: Path) -> None:
    """A moved project's .venv names the old folder in its scripts: make says so and makes it again."""
    shutil.copy(Path(__file__).resolve().parents[2] / "Makefile", project)
    shutil.copy(Path(__file__).resolve().parents[2] / "pyproject.toml", project)
    (project / ".venv/bin").mkdir(parents=True)
    (project / ".venv/.installed").touch()
    script = project / ".venv/bin/orchestrator"
    script.write_text("#!/old/checkout/.venv/bin/python3\n")
    plan = make(project, "-n", "setup")
    assert plan.stdout.splitlines()[:2] == [
        "make: .venv was installed in another folder (its scripts name /old/checkout/.venv/bin/python3): "
        "installing it again", "python3 -m venv --clear .venv"]
    script.write_text(f"#!{project}/.venv/bin/python3\n")  # made here: nothing to do
    assert "Nothing to be done for 'setup'" in make(project, "-n", "setup").stdout
