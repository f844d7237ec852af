"""The planner (`orchestrator run`, stages/run.py over core/project/plan.py): what runs after each
kind of change, and why. The stages' outputs are stand-ins written here (a file for a dataset, an
adapter with its manifest, a merged model with its record): what is judged is the plan, by
content, never by timestamps; the real stages run in tests/e2e (test_make.py, test_pipeline.py)."""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

import pytest

from orchestrator.core.common.errors import UserError
from orchestrator.core.project.plan import judge, finished, record_path, records_dir
from orchestrator.core.project.state import resolve, write_state
from orchestrator.core.recipes.overrides import MAKE_VARIABLES_ENV
from orchestrator.stages.run import make_call, output_identity, plan, run_targets

ALL = ["distill", "dataset-train_answer_instruct", "base-models_tiny-qwen2", "train-tiny-answer", "merge-tiny-answer",
       "dataset-train_evaluate_instruct", "train-tiny-evaluate", "merge-tiny-evaluate", "infer-tiny-infer",
       "score-tiny-infer"]


def stand_in(project: Path, output: str) -> None:
    """What a stage would have made at `output`, by content."""
    path = project / output
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name == "adapter":
        path.mkdir(exist_ok=True)
        (path / "adapter_model.safetensors").write_bytes(os.urandom(8))
        (path.parent / "manifest.json").write_text(json.dumps({"adapter_hash": os.urandom(4).hex()}))
    elif path.name == "merged":
        path.mkdir(exist_ok=True)
        (path / "config.json").write_text("{}")
        (path / "orchestrator.json").write_text(json.dumps({"identity": os.urandom(4).hex()}))
    else:
        path.write_text(os.urandom(4).hex())


def decide(*given: str) -> dict[str, list[str]]:
    """stage id -> its reasons (empty: up to date), as a dry run judges them."""
    settings, _ = resolve(dict(g.split("=", 1) for g in given))
    running: set[str] = set()
    out = {}
    for stage in plan(["all"], make_call(settings)):
        decision = judge(stage, running, output_identity)
        if decision.runs:
            running.add(stage.id)
        out[stage.id] = decision.reasons if decision.runs else []
    return out


def settle(*given: str, sets: tuple[str, ...] = ()) -> list[str]:
    """Every stage of `make all` run as run_targets runs it (a folder's run kept or brought back
    first, then judged again), its outputs stood in for, and recorded, in order; the lines it said
    of moved runs."""
    from orchestrator.core.common.paths import project_root
    from orchestrator.stages.run import before_running

    settings, keep = resolve(dict(g.split("=", 1) for g in given))
    write_state(keep)
    said = []
    for stage in plan(["all"], make_call(settings, sets)):
        decision = judge(stage, set(), output_identity)
        if decision.runs and (moved := before_running(decision)) is not None:
            said.append(moved)
            decision = judge(stage, set(), output_identity)
        if decision.runs:
            for output in stage.outputs:
                stand_in(project_root(), output)
            if not stage.present:
                finished(decision, output_identity)
    return said


def age(project: Path) -> None:
    """Every file of the project dated alike, long ago."""
    for path in project.rglob("*"):
        if path.is_file() and ".venv" not in path.parts:
            os.utime(path, (1e9, 1e9))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, path
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_the_plan_of_all_in_order(project: Path) -> None:
    assert list(decide("RECIPE=tiny")) == ALL


# (what is changed, the stages that then run, a reason each names)
CHANGES = [
    pytest.param(lambda p: edit(p / "recipes/tiny-answer.yaml", "learning_rate: 1.0e-2", "learning_rate: 2.0e-3"),
                 {"train-tiny-answer", "train-tiny-evaluate"},  # the Evaluate recipe extends the Answer one
                 "train.learning_rate 0.01 -> 0.002 (recipes/tiny-answer.yaml)", id="content-changed-old-timestamps"),
    pytest.param(lambda p: None, set(), None, id="timestamps-changed-same-content"),
    pytest.param(lambda p: edit(p / "recipes/answer.yaml", "lora_dropout: 0.05", "lora_dropout: 0.1"),
                 {"train-tiny-answer", "train-tiny-evaluate"},
                 "train.lora_dropout 0.05 -> 0.1 (recipes/answer.yaml)", id="an-extends-parent-edited"),
    pytest.param(lambda p: edit(p / "recipes/tiny-evaluate.yaml", "role: evaluate", "role: evaluate\nserve:\n  port: 8123"),
                 set(), None, id="a-key-no-planned-stage-reads"),
    pytest.param(lambda p: (p / "datasets/sample/train.jsonl").write_text(
                     (p / "datasets/sample/train.jsonl").read_text().replace("A", "B", 1)),
                 {"distill", "dataset-train_answer_instruct", "dataset-train_evaluate_instruct",
                  "infer-tiny-infer"},  # (infer's fallback letter: the training file's most frequent gold)
                 "file datasets/sample/train.jsonl changed", id="a-data-file-edited"),
    pytest.param(lambda p: (p / "datasets/sample/test_gold.jsonl").write_text(
                     (p / "datasets/sample/test_gold.jsonl").read_text() + "\n"),
                 {"score-tiny-infer"}, "file datasets/sample/test_gold.jsonl changed", id="the-gold-file-edited"),
]


@pytest.mark.parametrize("change, runs, reason", CHANGES)
def test_what_runs_after_a_change(project: Path, change, runs: set[str], reason: str | None) -> None:
    settle("RECIPE=tiny")
    age(project)
    assert not any(decide().values())  # settled: the kept RECIPE, nothing to do
    change(project)
    for path in project.rglob("*"):
        if path.is_file():
            os.utime(path, (time.time(), time.time()))  # every file touched: timestamps decide nothing
    reasons = decide()
    first = {stage for stage, why in reasons.items() if why and not all(w.startswith("after ") for w in why)}
    assert first == runs
    if reason:
        assert all(any(reason in why for why in reasons[stage]) for stage in runs), reasons
    downstream = {stage for stage, why in reasons.items() if why} - first
    assert all(reasons[s][0].startswith("after ") for s in downstream)  # a dry run says why the rest follows



DPO = ["RECIPE=tiny", "ANSWER_RECIPE=recipes/tiny-answer-dpo.yaml"]


def test_a_preference_recipe_plans_its_sft_model_then_its_pairs_then_dpo(project: Path) -> None:
    """train.stage dpo: the SFT recipe's set, training and merge come first (the reference is the
    merged SFT model), then the pairs sampled from it, then the DPO training and its merge."""
    answer = [s for s in decide(*DPO) if s.endswith(("answer", "answer-dpo", "_answer", "_answer_instruct"))]
    assert answer == ["dataset-train_answer_instruct", "train-tiny-answer", "merge-tiny-answer",
                      "dataset-pref_tiny_answer", "train-tiny-answer-dpo", "merge-tiny-answer-dpo"]


def test_a_retrained_sft_model_samples_its_pairs_again_and_retrains_dpo(project: Path) -> None:
    settle(*DPO)
    assert not any(decide().values())
    stand_in(project, "runs/tiny-answer/adapter")  # the SFT model trained again (another adapter)
    reasons = decide()
    for stage in ("dataset-pref_tiny_answer", "train-tiny-answer-dpo"):
        assert any(r.startswith("model runs/tiny-answer/adapter ") and "(the SFT model)" in r
                   for r in reasons[stage]), reasons[stage]
    assert reasons["train-tiny-answer"] == ["runs/tiny-answer/adapter was changed by another command since this stage made it"]

def test_a_kept_value_is_an_input_named_with_where_it_is_kept(project: Path) -> None:
    settle("RECIPE=tiny")
    (project / "data").mkdir()
    (project / "data/train.jsonl").write_text((project / "datasets/sample/train.jsonl").read_text())
    write_state({"RECIPE": "tiny", "TRAIN": "data/train.jsonl"})  # a person's edit of the state
    reasons = decide()
    assert ("data.train \"datasets/sample/train.jsonl\" -> \"data/train.jsonl\" (TRAIN in .orchestrator/state.yaml)"
            in reasons["distill"])
    assert not reasons["train-tiny-answer"][0].startswith("data.train")  # (after the dataset, whose output it reads)


def test_an_interrupted_stage_runs_again_and_what_follows_it(project: Path) -> None:
    settle("RECIPE=tiny")
    record_path("train-tiny-evaluate").unlink()  # it started, and never finished
    reasons = decide()
    assert reasons["train-tiny-evaluate"] == ["no record of a finished run (never run, or interrupted: it resumes)"]
    assert reasons["merge-tiny-evaluate"] == ["after train-tiny-evaluate, whose output it reads"]
    assert not reasons["train-tiny-answer"] and not reasons["distill"]


def test_an_output_changed_by_a_hand_run_command_is_said(project: Path) -> None:
    settle("RECIPE=tiny")
    stand_in(project, "runs/tiny-answer/adapter")  # `orchestrator train answer --set ...` typed by hand
    assert decide()["train-tiny-answer"] == [
        "runs/tiny-answer/adapter was changed by another command since this stage made it"]


def test_a_dry_run_writes_nothing(project: Path, cli) -> None:
    before = sorted(p.relative_to(project).as_posix() for p in project.rglob("*"))
    code, out, err = cli("run", "all", "RECIPE=tiny", "TRAIN=datasets/sample/train.jsonl", "LIMIT=3", "--dry-run")
    assert code == 0, err
    assert "$ orchestrator distill --pipeline recipes/tiny-pipeline.yaml --set data.train=datasets/sample/train.jsonl " \
           "--limit 30" in out
    assert "[run] would keep in .orchestrator/state.yaml: RECIPE=tiny TRAIN=datasets/sample/train.jsonl LIMIT=3" in err
    assert sorted(p.relative_to(project).as_posix() for p in project.rglob("*")) == before


def test_the_next_call_and_a_hand_typed_command_read_the_kept_values(project: Path, cli) -> None:
    (project / "data").mkdir()
    (project / "data/train.jsonl").write_text((project / "datasets/sample/train.jsonl").read_text())
    settle("RECIPE=tiny", "TRAIN=data/train.jsonl", "LIMIT=3")
    code, out, err = cli("run", "all", "--dry-run")
    assert code == 0, err
    assert "RECIPE=tiny TRAIN=data/train.jsonl LIMIT=3 (kept in .orchestrator/state.yaml" in err
    assert "[run] train-tiny-answer: up to date" in out  # the kept recipe set and data: nothing to do
    code, out, err = cli("render", "answer")  # typed by hand: the kept recipe set
    assert code == 0, err
    assert "[recipes] answer recipe recipes/tiny-answer.yaml (from RECIPE in .orchestrator/state.yaml)" in err


# given -> (a line the planner prints to stderr)
NOTES = [
    (("TRAIN=",), "TRAIN= given: the recipe's own value from now on (it was TRAIN=data/train.jsonl)"),
    (("TRAIN=data/trian.jsonl",), "TRAIN=data/trian.jsonl: no such file, so not kept for the next call"),
    (("PIPELINE=recipes/tiny-pipeline.yaml",),
     "PIPELINE=recipes/tiny-pipeline.yaml names its own data and teacher: TRAIN=data/train.jsonl kept before no longer apply"),
]


@pytest.mark.parametrize("given, note", NOTES, ids=["cleared", "no-such-file", "new-pipeline"])
def test_what_a_call_keeps(project: Path, cli, given: tuple[str, ...], note: str) -> None:
    (project / "data").mkdir()
    (project / "data/train.jsonl").write_text((project / "datasets/sample/train.jsonl").read_text())
    write_state({"RECIPE": "tiny", "TRAIN": "data/train.jsonl"})
    code, out, err = cli("run", "distill", *given)
    assert f"[run] {note}" in err
    text = (project / ".orchestrator/state.yaml").read_text()
    assert ("TRAIN: data/train.jsonl" in text) is (given == ("TRAIN=data/trian.jsonl",))


ERRORS = [
    (("all", "TRAINN=x"), "Error: TRAINN: not a setting; the settings are RECIPE"),
    (("al",), "Error: al: not a target of `orchestrator run`; the targets are answer-model"),
    (("all", "LIMIT=x"), "Error: LIMIT=x: a number of problems such as 3 (LIMIT= for all of them)"),
    (("all", "RECIPE=tiny", "ANSWER_RECIPE=recipes/nope.yaml"), "Error: recipes/nope.yaml"),
]


@pytest.mark.parametrize("args, error", ERRORS, ids=["setting", "target", "limit", "recipe"])
def test_bad_input_is_one_error_line_and_nothing_kept(project: Path, cli, args: tuple[str, ...], error: str) -> None:
    code, out, err = cli("run", *args)
    assert code != 0 and error in err and "Traceback" not in err
    assert not (project / ".orchestrator").exists()  # nothing kept of a refused call


def _ids(*sets: str, targets: tuple[str, ...] = ("all",)) -> list[str]:
    settings, _ = resolve({"RECIPE": "tiny"})
    return [stage.id for stage in plan(list(targets), make_call(settings, sets))]


# a call's --set items -> (the stages that get a variant's name, by their prefix) ; what keeps the main name
VARIANT_CALLS = [
    pytest.param(("train.learning_rate=2.0e-3",), ["train-tiny-answer@", "train-tiny-evaluate@", "infer-tiny-infer@",
                                                   "score-tiny-infer@", "eval-tiny-eval@"], id="a-training-key"),
    pytest.param(("train.learning_rate=1.0e-2",), [], id="the-recipes-own-value-is-no-variant"),
    pytest.param(("inference.votes=3",), ["infer-tiny-infer@", "score-tiny-infer@", "eval-tiny-eval@"],
                 id="a-pipeline-key-varies-the-runs-not-the-models"),
    pytest.param(("dataset.val_size=0.1",), ["dataset-train_answer_instruct.", "dataset-train_evaluate_instruct.",
                                             "train-tiny-answer@", "infer-tiny-infer@", "eval-tiny-eval@"],
                 id="a-dataset-key-builds-its-own-sets"),
]


@pytest.mark.parametrize("sets, variant", VARIANT_CALLS)
def test_a_variant_call_plans_beside_the_main_pipeline(project: Path, sets: tuple[str, ...], variant: list[str]) -> None:
    """`orchestrator run all --set ...`: every stage whose output the --set changes is named by the
    variant (the main runs/tiny-infer, its record and its datasets stay the recipes' own), one hash for
    the models and their runs; the held-out problems of a variant's sets are its own file."""
    main = _ids(targets=("all", "eval"))
    ids = _ids(*sets, targets=("all", "eval"))
    named = [i for i in ids if "@" in i or i.startswith("dataset-") and i.count(".")]
    assert all(any(i.startswith(v) for i in named) for v in variant) and len(named) >= len(variant), ids
    assert not set(named) & set(main)
    hashes = {i.rpartition("@")[2] for i in named if "@" in i and not i.startswith(("infer", "score", "eval"))}
    runs = {i.rpartition("@")[2] for i in named if i.startswith(("infer", "score", "eval"))}
    assert len(runs) <= 1 and (not hashes or hashes == runs), ids  # runs/tiny-infer@<h> beside runs/tiny-answer@<h>
    if sets == ("dataset.val_size=0.1",):
        settings, _ = resolve({"RECIPE": "tiny"})
        [stage] = [s for s in plan(["eval"], make_call(settings, sets)) if s.id.startswith("eval-")]
        [dataset] = [i for i in ids if i.startswith("dataset-train_answer_instruct.")]
        assert f"file datasets/val.{dataset.rpartition('.')[2]}.jsonl" in stage.inputs()


def run_all(*sets: str) -> list[str]:
    """`orchestrator run all RECIPE=tiny --set ...`, as settle runs it."""
    return settle("RECIPE=tiny", sets=sets)


def test_an_edited_pipeline_keeps_the_infer_run_and_going_back_brings_it_back(project: Path, cli) -> None:
    run_all()
    main = project / "runs/tiny-infer"
    submission, report = (main / "submission.jsonl").read_text(), (main / "report.md").read_text()
    edit(project / "recipes/tiny-pipeline.yaml", "concurrency: 4", "concurrency: 4\n  votes: 3")
    [kept] = run_all()
    assert kept.startswith("infer-tiny-infer: the run in runs/tiny-infer (another configuration) kept in runs/tiny-infer/kept/")
    [entry] = (main / "kept").iterdir()
    assert (entry / "submission.jsonl").read_text() == submission and (entry / "report.md").read_text() == report
    assert (main / "submission.jsonl").read_text() != submission
    edit(project / "recipes/tiny-pipeline.yaml", "concurrency: 4\n  votes: 3", "concurrency: 4")
    code, out, err = cli("run", "all", "--dry-run")
    assert code == 0, err
    assert f"[run] infer-tiny-infer: run before on these inputs, kept in runs/tiny-infer/kept/{entry.name}: " \
           "it would come back" in out
    [back] = run_all()  # nothing stood in again: it came back, and score is up to date with it
    assert f"run before on these inputs: runs/tiny-infer is back from runs/tiny-infer/kept/{entry.name}" in back
    assert (main / "submission.jsonl").read_text() == submission and (main / "report.md").read_text() == report
    assert not any(decide().values())
    assert len(list((main / "kept").iterdir())) == 1  # the votes: 3 run, kept in turn


def test_a_variant_call_leaves_the_main_run_alone(project: Path) -> None:
    run_all()
    main = {p.name: p.read_bytes() for p in (project / "runs/tiny-infer").iterdir() if p.is_file()}
    run_all("inference.votes=3")
    [variant] = [p for p in (project / "runs").iterdir() if p.name.startswith("tiny-infer@")]
    assert (variant / "submission.jsonl").is_file() and (variant / "report.md").is_file()
    assert {p.name: p.read_bytes() for p in (project / "runs/tiny-infer").iterdir() if p.is_file()} == main
    assert not any(decide().values())  # the main pipeline: nothing to do


def files(project: Path) -> set[str]:
    return {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}


def short(command: list[str]) -> str:
    """`train answer`, `distill`: a command by its name and its first argument, when not an option."""
    return " ".join(command[:1] + [a for a in command[1:2] if not a.startswith("-")])


def interrupted_evaluate(project: Path) -> None:
    settle("RECIPE=tiny")
    record_path("train-tiny-evaluate").unlink()


FRESH_ALL = ["distill", "dataset answer", "tiny-model models/tiny-qwen2", "train answer", "merge answer",
             "dataset evaluate", "train evaluate", "merge evaluate", "infer", "score runs/tiny-infer/submission.jsonl"]
MAKES = {"dataset answer": "datasets/train_answer_instruct.json", "tiny-model models/tiny-qwen2": "models/tiny-qwen2/config.json",
         "train answer": "runs/tiny-answer/adapter", "merge answer": "runs/tiny-answer/merged",
         "dataset evaluate": "datasets/train_evaluate_instruct.json", "train evaluate": "runs/tiny-evaluate/adapter",
         "merge evaluate": "runs/tiny-evaluate/merged", "infer": "runs/tiny-infer/submission.jsonl",
         "score runs/tiny-infer/submission.jsonl": "runs/tiny-infer/report.md"}  # what each command makes (stood in)
SETTLED = set(ALL) - {"base-models_tiny-qwen2"}  # (a base model is up to date once it is there: no record)

# (before the call, its targets and values, a dry run, the command run_stage fails on, the commands it
# is given (each making a stand-in of its output), the stage records after, the state kept after, the error raised)
PLAIN = [
    pytest.param(None, ["all"], {"RECIPE": "tiny", "TRAIN": "datasets/sample/train.jsonl"}, True, None, [], set(), None, None,
                 id="a-dry-run-runs-and-writes-nothing"),
    pytest.param(interrupted_evaluate, ["all"], {}, False, None,
                 ["train evaluate", "merge evaluate", "infer", "score runs/tiny-infer/submission.jsonl"],
                 SETTLED, "RECIPE: tiny", None, id="up-to-date-stages-are-not-run"),
    pytest.param(None, ["all"], {"RECIPE": "tiny", "TRAIN": "datasets/sample/train.jsonl"}, False, "train",
                 FRESH_ALL[:4], {"distill", "dataset-train_answer_instruct"},
                 "RECIPE: tiny\nTRAIN: datasets/sample/train.jsonl", "train failed",
                 id="a-stage-that-fails-leaves-no-record-those-before-keep-theirs"),
    pytest.param(None, ["all", "al"], {"RECIPE": "tiny"}, False, None, [], set(), None, "al: not a target",
                 id="a-refused-target-keeps-nothing"),
    pytest.param(None, ["all"], {"RECIPE": "tiny", "ANSWER_RECIPE": "recipes/nope.yaml"}, False, None, [], set(), None,
                 "recipes/nope.yaml", id="a-recipe-that-does-not-load-keeps-nothing"),
    pytest.param(None, ["all"], {"RECIPE": "tiny"}, False, None, FRESH_ALL, SETTLED, "RECIPE: tiny", None,
                 id="a-real-run-runs-each-stage-once-in-order"),
]


@pytest.mark.parametrize("before, targets, given, dry_run, fails, ran, recorded, kept, error", PLAIN)
def test_run_targets_called_without_click(project: Path, monkeypatch: pytest.MonkeyPatch, before, targets: list[str],
                                          given: dict[str, str], dry_run: bool, fails: str | None, ran: list[str],
                                          recorded: set[str], kept: str | None, error: str | None) -> None:
    """The planner's loop as a plain function: each stage's command goes to `run_stage` (here a
    recorder that stands in for what the command makes), never to click."""
    if before:
        before(project)
    state = project / ".orchestrator/state.yaml"
    kept_before = state.read_text() if state.is_file() else None
    listed = files(project)
    monkeypatch.delenv(MAKE_VARIABLES_ENV, raising=False)
    commands: list[list[str]] = []
    variables: list[str | None] = []
    said: list[str] = []
    notes: list[str] = []

    def run_stage(command: list[str]) -> None:
        commands.append(command)
        variables.append(os.environ.get(MAKE_VARIABLES_ENV))
        if command[0] == fails:
            raise UserError(f"{fails} failed")
        if short(command) in MAKES:
            stand_in(project, MAKES[short(command)])

    try:
        decisions = run_targets(targets, given, run_stage=run_stage, dry_run=dry_run, say=said.append, note=notes.append)
    except UserError as e:
        assert error and error in str(e), e
        decisions = None
    else:
        assert error is None
    assert [short(c) for c in commands] == ran
    assert {p.stem for p in records_dir().glob("*.json")} == recorded
    assert (state.read_text().split("\n", 3)[-1].strip() if state.is_file() else None) == (kept or kept_before)
    assert variables == ["data.train=TRAIN" if "TRAIN" in given else ""] * len(ran)  # the values' make variables
    assert MAKE_VARIABLES_ENV not in os.environ  # as it was, after
    if dry_run or error and not ran:
        assert files(project) == listed  # nothing written
    if decisions is not None:
        assert [short(d.stage.command) for d in decisions if d.runs] == (FRESH_ALL if dry_run else ran)
        moves = [line for line in said if "(another configuration) kept in" in line or " is back from " in line]
        assert [line for line in said if line not in moves] == [line for d in decisions for line in [f"[run] {d.line()}"]
                        + ([f"$ orchestrator {shlex.join(d.stage.command)}"] if d.runs else [])]
    if dry_run:
        assert notes[-1] == "[run] would keep in .orchestrator/state.yaml: RECIPE=tiny TRAIN=datasets/sample/train.jsonl"
    if ran and not error:
        assert not any(d.runs for d in run_targets(targets, {}, run_stage=run_stage, say=[].append, note=[].append))  # settled


# (settled first, the call, its exit code: 0 nothing would run, 1 a stage would, 2 an error)
QUESTIONS = [
    pytest.param(False, ("all", "RECIPE=tiny"), 1, id="fresh"),
    pytest.param(True, ("all",), 0, id="settled"),
    pytest.param(True, ("answer-model", "infer"), 0, id="settled-two-targets"),
    pytest.param(True, ("all", "LIMIT=3"), 1, id="a-changed-value"),
    pytest.param(True, ("check",), 1, id="a-command-that-always-runs"),
    pytest.param(True, ("all", "LIMIT=x"), 2, id="bad-input"),
]


@pytest.mark.parametrize("settled, args, code", QUESTIONS)
def test_question_answers_by_its_exit_code_and_prints_and_writes_nothing(project: Path, cli, settled: bool,
                                                                        args: tuple[str, ...], code: int) -> None:
    """`orchestrator run --question` (make -q): whether anything would run, as make asks it."""
    if settled:
        settle("RECIPE=tiny")
    listed = files(project)
    got, out, err = cli("run", *args, "--question")
    assert (got, out) == (code, "")
    assert err == ("" if code < 2 else "Error: LIMIT=x: a number of problems such as 3 (LIMIT= for all of them)\n")
    assert files(project) == listed
