"""Real `llamafactory-cli train` and `export` of the tiny model, both roles, on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import trained_copy

from orchestrator.core.common.errors import StageFailed, UserError
from orchestrator.core.recipes.loading import load_role

pytestmark = pytest.mark.slow


def build_datasets(cli) -> None:
    """The sample's sets, with one label corrected through a fixes file."""
    from orchestrator.core.common.paths import project_root
    from orchestrator.core.data.competition import read_dataset

    first = read_dataset(project_root() / "datasets/sample/train.jsonl").questions[0]
    other = next(letter for letter in first.letters if letter != first.answer)
    (project_root() / "fixes.yaml").write_text(f"{first.qid}: {other}\n", encoding="utf-8")
    (project_root() / "recipes/fixed.yaml").write_text("extends: pipeline.yaml\ndata:\n  fixes: fixes.yaml\n")
    code, out, err = cli("distill", "--pipeline", "recipes/fixed.yaml")  # offline: the sample's solutions are preloaded
    assert code == 0, err
    for role in ("answer", "evaluate"):
        code, out, err = cli("dataset", role, "--recipe", f"recipes/tiny-{role}.yaml", "--pipeline", "recipes/fixed.yaml")
        assert code == 0, err


def test_both_roles_as_make_eval_trained_and_merged_them(made_eval, tmp_path: Path, monkeypatch, cli) -> None:
    """The session's `make eval RECIPE=tiny` (conftest's made_eval) trained and merged both roles
    with the real llamafactory-cli; what each left, and what it said. Then, in a copy, the recipe
    saved again unchanged trains and merges nothing."""
    done = made_eval.done
    assert done.returncode == 0, done.stderr[-3000:]
    for role in ("answer", "evaluate"):
        said = [line for line in done.stderr.splitlines() if line.startswith(f"[train tiny-{role}]")]
        # quiet by default: the command, the training summary and the step bar, not the tool's 300 lines
        assert any("train_runtime" in line for line in said) and f"[train tiny-{role}] {{'eval_loss': " in done.stderr
        assert "{'loss'" not in done.stderr and "input_ids" not in done.stderr
        assert "pin_memory" not in done.stderr  # CPU noise: in the log only
        run = made_eval.project / "runs" / f"tiny-{role}"
        assert "pin_memory" in (run / "train.log").read_text()
        steps = [line for line in said if " step (" in line]  # the bar: a line per 10 s that moved
        assert len(steps) == len(set(steps)) and steps[-1].startswith(f"[train tiny-{role}] 60/60 step")
        assert len(said) - len(steps) < 10, said
        assert (run / "adapter" / "adapter_model.safetensors").exists()
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["steps"] == 60 and manifest["final_loss"] > 0
        assert manifest["versions"]["llamafactory"] == "0.9.5"
        assert manifest["recipe"]["role"] == role
        assert manifest["data"]["dataset"]["split"]["val_problems"]  # what the set was built from
        assert (run / "adapter" / "training_loss.png").exists()  # plot_loss kept
        merged = run / "merged"
        assert (merged / "config.json").exists() and list(merged.glob("*.safetensors"))
        assert not (run / ".merged.tmp").exists()

    # trained already: content, not timestamps, decides; the recipe saved again unchanged trains nothing
    project = trained_copy(made_eval.project, tmp_path / "trained")
    monkeypatch.chdir(project)
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(project))
    recipe = project / "recipes/tiny-answer.yaml"
    recipe.write_text(recipe.read_text())
    adapter = project / "runs/tiny-answer/adapter/adapter_model.safetensors"
    before = adapter.stat().st_mtime
    code, out, err = cli("train", "answer", "--recipe", "recipes/tiny-answer.yaml")
    assert code == 0, err
    assert out.startswith(f"up to date: {project}/runs/tiny-answer/adapter") and "launching" not in err
    assert adapter.stat().st_mtime >= before  # touched: make sees it checked
    code, out, err = cli("merge", "answer", "--recipe", "recipes/tiny-answer.yaml")
    assert code == 0 and "up to date" in err and "llamafactory-cli export" not in err, err

    # a changed input is named, and the adapter is trained again (not run here: the check alone)
    from orchestrator.core.llamafactory.configs import render_roles
    from orchestrator.core.run_folders.role_paths import role_paths
    from orchestrator.stages.train import _changed, training_inputs

    changed = load_role("answer", "recipes/tiny-answer.yaml", ["train.learning_rate=1e-3"])
    render_roles([changed])
    manifest = json.loads((project / "runs/tiny-answer/manifest.json").read_text())
    assert _changed(manifest["inputs"], training_inputs(changed, role_paths(changed.recipe))) == ["train_yaml"]


def test_merge_without_adapter_is_refused(tiny_project: Path, cli) -> None:
    code, out, err = cli("merge", "answer", "--recipe", "recipes/tiny-answer.yaml")
    assert code == 2
    assert err.strip() == (
        f"Error: {tiny_project}/runs/tiny-answer/adapter has no trained adapter (no adapter_model.safetensors): "
        "run `orchestrator train answer --recipe recipes/tiny-answer.yaml` first"
    )


@pytest.mark.parametrize(
    "rows, expected",
    [
        (None, "datasets/train_answer_instruct.json does not exist yet: run `orchestrator dataset answer`"),
        ([], "has no samples: nothing to train on"),
    ],
)
def test_train_preflight(tiny_project: Path, rows, expected: str) -> None:
    from orchestrator.stages.train import train

    if rows is not None:
        (tiny_project / "datasets" / "train_answer_instruct.json").write_text(json.dumps(rows))
    with pytest.raises(UserError, match=expected.replace("`", ".").replace("(", ".").replace(")", ".")):
        train(load_role("answer", "recipes/tiny-answer.yaml"), echo=False)


@pytest.mark.parametrize("key", ["bf16", "fp16"])
def test_mixed_precision_without_a_gpu_is_one_line_before_launching(tiny_project: Path, monkeypatch, key: str) -> None:
    """A pasted LLaMA-Factory config (bf16: true) trained on a machine without a GPU: one line naming
    the recipe that sets it and the fix, not transformers' traceback after the model loads."""
    from orchestrator.stages.train import train

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU, as here
    recipe = tiny_project / "recipes" / "pasted.yaml"
    recipe.write_text(f"extends: tiny-answer.yaml\nname: pasted\ntrain:\n  {key}: true\n", encoding="utf-8")
    loaded = load_role("answer", recipe)
    rows = [{"instruction": "问题", "input": "", "output": "答案是：A"}] * 4
    for name in (loaded.recipe.dataset_name, loaded.recipe.eval_dataset_name):
        (tiny_project / "datasets" / f"{name}.json").write_text(json.dumps(rows))
    with pytest.raises(UserError) as info:
        train(loaded, echo=False)
    assert info.value.lines == [f"recipes/pasted.yaml: train.{key} true needs a GPU and this machine has none "
                                "(transformers refuses it): train on the GPU machine, or "
                                f"here with {key}: null under train: in recipes/pasted.yaml (as recipes/tiny-answer.yaml "
                                f"has it) or --set train.{key}=null"]
    assert not (tiny_project / "runs" / "pasted" / "train.log").exists()  # nothing launched


def test_failing_training_gives_the_log_tail_and_config(tiny_project: Path) -> None:
    from orchestrator.stages.train import train

    # samples LLaMA-Factory rejects: no response at all
    rows = [{"instruction": "问题", "input": "", "output": None}] * 4  # no response: LLaMA-Factory drops them
    loaded = load_role("answer", "recipes/tiny-answer.yaml", ["dataset.val_size=0"])  # a variant: its own set and folder
    (tiny_project / "datasets" / f"{loaded.recipe.dataset_name}.json").write_text(json.dumps(rows))
    with pytest.raises(StageFailed) as info:
        train(loaded, echo=False)
    lines = info.value.lines
    run = tiny_project / "runs" / loaded.recipe.run_name
    assert lines[0].startswith(f"train {run.name}: llamafactory-cli train exited with code 1")
    assert any("valid" in line.lower() for line in lines[1:-1]), lines
    assert lines[-1] == f"rendered config: {run}/train.yaml; full log: {run}/train.log"


def test_interrupted_training_resumes_from_checkpoint(tiny_project: Path, cli) -> None:
    build_datasets(cli)
    sets = ["train.max_steps=20", "train.save_steps=2"]
    run = tiny_project / "runs" / load_role("answer", "recipes/tiny-answer.yaml", sets).recipe.run_name  # a variant's folder
    assert run.name.startswith("tiny-answer@")
    cmd = [sys.executable, "-m", "orchestrator", "train", "answer", "--recipe", "recipes/tiny-answer.yaml",
           "--set", "train.max_steps=20", "--set", "train.save_steps=2"]
    env = {**os.environ, "ORCHESTRATOR_HOME": str(tiny_project)}
    proc = subprocess.Popen(cmd, cwd=tiny_project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    # signalled as soon as the first checkpoint is complete, 18 steps before the end (no sleep
    # that bets on how far the training gets meanwhile)
    while not (run / "adapter" / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint-2 before the training ended"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # as Ctrl-C or a scheduler would
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not (run / "adapter" / "adapter_model.safetensors").exists()
    # every llamafactory process of that run is gone
    ps = subprocess.run(["pgrep", "-f", str(run / "train.yaml")], capture_output=True, text=True)
    assert ps.stdout.strip() == ""
    # as if the signal had come while the Trainer was saving: a newer checkpoint with no state yet
    (run / "adapter" / "checkpoint-19").mkdir(exist_ok=True)

    code, out, err = cli("train", "answer", "--recipe", "recipes/tiny-answer.yaml", "--set", "train.max_steps=20", "--set", "train.save_steps=2")
    assert code == 0, err
    assert "set aside incomplete-checkpoint-19: its save was interrupted" in err
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["resumed_from"].startswith("checkpoint-")
    assert "resuming from checkpoint-" in err
    assert manifest["steps"] == 20
    # the values the command line set: printed at start and kept in the manifest
    assert f"[train {run.name}] train.max_steps = 20  (from --set)" in err
    assert not (tiny_project / "runs" / "tiny-answer" / "adapter").exists()  # the recipe's own model never touched
    assert manifest["overrides"] == {"train.max_steps": {"value": 20, "from": "--set"},
                                     "train.save_steps": {"value": 2, "from": "--set"}}


def test_train_preflight_needs_the_held_out_set(tiny_project: Path) -> None:
    """val_size > 0 makes train.yaml name eval_dataset: its file is checked before the launch."""
    from orchestrator.stages.train import train

    rows = [{"instruction": "问题", "input": "", "output": "答案是：A"}]
    (tiny_project / "datasets" / "train_answer_instruct.json").write_text(json.dumps(rows))
    with pytest.raises(UserError, match="val_answer_instruct.json does not exist yet: run .orchestrator dataset answer"):
        train(load_role("answer", "recipes/tiny-answer.yaml", ["dataset.val_size=0.2"]), echo=False)


def test_a_checkpoint_cut_short_is_set_aside(tmp_path: Path) -> None:
    """A SIGTERM while the Trainer saves leaves checkpoint-N without trainer_state.json (written
    last); LLaMA-Factory would resume from it and fail, so it is renamed and the last complete one used."""
    from orchestrator.stages.train import last_checkpoint, set_aside_incomplete

    adapter = tmp_path / "adapter"
    for step, state in ((2, "{}"), (4, "{}"), (6, None), (8, "{\"global_st")):  # 6: no state; 8: torn
        (adapter / f"checkpoint-{step}").mkdir(parents=True)
        if state is not None:
            (adapter / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (adapter / "checkpoint-10.tmp").mkdir()  # not a checkpoint name: left alone
    assert last_checkpoint(adapter) == adapter / "checkpoint-4"
    moved = set_aside_incomplete(adapter)
    assert [p.name for p in moved] == ["incomplete-checkpoint-6", "incomplete-checkpoint-8"]
    assert sorted(p.name for p in adapter.iterdir()) == [
        "checkpoint-10.tmp", "checkpoint-2", "checkpoint-4", "incomplete-checkpoint-6", "incomplete-checkpoint-8"]
    assert last_checkpoint(adapter) == adapter / "checkpoint-4"


def test_an_adapter_recorded_by_an_older_version_is_not_trained_again(tiny_project: Path) -> None:
    """A manifest from before identities by content (absolute paths, no adapter_hash): the same
    inputs read the old way are the same training, recorded again portably; a corrupt manifest
    is one Error and the adapter stays."""
    from orchestrator.core.llamafactory.configs import render_roles
    from orchestrator.stages.train import _absolute_inputs, train, training_inputs

    rows = [{"instruction": "问题", "input": "", "output": "答案是：A"}]
    loaded = load_role("answer", "recipes/tiny-answer.yaml", ["dataset.val_size=0"])  # a variant: its own set and folder
    (tiny_project / "datasets" / f"{loaded.recipe.dataset_name}.json").write_text(json.dumps(rows))
    paths = render_roles([loaded])[0].paths
    name = loaded.recipe.run_name
    (paths.adapter).mkdir(parents=True)
    (paths.adapter / "adapter_model.safetensors").write_bytes(b"trained for hours")
    paths.manifest.write_text(json.dumps({"final_loss": 0.5, "inputs": _absolute_inputs(loaded, paths)}))
    done = train(loaded, echo=False)
    assert done.up_to_date and done.final_loss == 0.5
    manifest = json.loads(paths.manifest.read_text())
    assert manifest["inputs"] == training_inputs(loaded, paths) and manifest["adapter_hash"]
    assert str(tiny_project) not in json.dumps(manifest["inputs"])  # nothing absolute is compared

    paths.manifest.write_text("{")
    with pytest.raises(UserError) as info:
        train(loaded, echo=False)
    assert info.value.lines == [f"runs/{name}/manifest.json is unreadable (not valid JSON): `orchestrator train "
                                f"answer --fresh` trains again, keeping runs/{name}/adapter in runs/{name}/kept/"]
    assert (paths.adapter / "adapter_model.safetensors").read_bytes() == b"trained for hours"


def test_the_step_bar_shows_the_newest_logged_loss(tmp_path: Path, capsys) -> None:
    """LLaMA-Factory's closing row (the last step again, no loss) read in the same poll as the last
    step's: the bar ends on the last step's loss, not the one before."""
    import threading

    from orchestrator.stages.train import _watch_steps

    rows = [{"current_steps": 7, "total_steps": 8, "loss": 9.0548},
            {"current_steps": 8, "total_steps": 8, "loss": 10.019},
            {"current_steps": 8, "total_steps": 8}]
    (tmp_path / "trainer_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    class OnePoll(threading.Event):
        """The watcher's stop event: not set at its first wait (it polls the log once), set at the
        next (that poll is done). No sleep that bets on a poll landing in time."""

        waits = 0

        def wait(self, timeout: float | None = None) -> bool:
            self.waits += 1
            return self.waits > 1

    _watch_steps(tmp_path, OnePoll(), "train t")
    err = capsys.readouterr().err
    assert "8/8 step" in err and "loss 10.0190" in err and "9.0548" not in err, err
