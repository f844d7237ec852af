"""The two alpaca training sets built from the competition data and the teacher cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fake_openai import FakeOpenAI
from helpers import make_train, teacher_flags

from orchestrator.core.common.errors import UserError
from orchestrator.core.data.competition import read_dataset
from orchestrator.core.data.prompts import answer_prompt, evaluate_prompt
from orchestrator.core.recipes.loading import load_pipeline, load_role
from orchestrator.stages.dataset import build_dataset, split_by_problem
from orchestrator.stages.distill import distill


def rows(project: Path, name: str) -> list[dict]:
    return json.loads((project / "datasets" / f"{name}.json").read_text(encoding="utf-8"))


def test_sample_datasets(project: Path, cli) -> None:
    assert cli("distill")[0] == 0
    train = read_dataset(project / "datasets/sample/train.jsonl")
    by_prompt = {answer_prompt(q): q for q in train.questions}
    cache = [json.loads(line) for line in (project / "runs/distill/teacher.jsonl").read_text().splitlines()]
    agreeing = sum(r["agrees"] for r in cache)

    answer = build_dataset(role=load_role("answer"), pipeline=load_pipeline())
    assert answer.train == len(rows(project, "train_answer_instruct")) == agreeing  # keep: agreeing
    assert answer.dropped == len(cache) - agreeing > 0
    for row in rows(project, "train_answer_instruct"):
        assert row["instruction"] in by_prompt and row["input"] == ""
        assert row["output"].startswith("### 思考思路:")

    evaluate = build_dataset(role=load_role("evaluate"), pipeline=load_pipeline())
    assert evaluate.train == len(train.questions)  # the Evaluate set takes every reply
    text_of = {r["qid"]: r["text"] for r in cache}
    for q, row in zip(train.questions, rows(project, "train_evaluate_instruct")):
        assert row["instruction"] == evaluate_prompt(q, text_of[q.qid])
        assert row["output"] == f"答案是：{q.answer}"
    assert sum(evaluate.letters.values()) == evaluate.train

    info = json.loads((project / "datasets/dataset_info.json").read_text())
    assert {"train_answer_instruct", "train_evaluate_instruct"} <= set(info)


def test_keep_all(project: Path, cli) -> None:
    assert cli("distill")[0] == 0
    code, out, err = cli("dataset", "answer", "--pipeline", "recipes/pipeline.yaml")
    kept = len(rows(project, "train_answer_instruct"))
    (project / "recipes" / "keep-all.yaml").write_text("extends: pipeline.yaml\nteacher:\n  keep: all\n")
    assert build_dataset(role=load_role("answer"), pipeline=load_pipeline("recipes/keep-all.yaml")).train > kept


def variant_dataset(role: str, *sets: str) -> str:
    """The training set a --set of a dataset key builds: <dataset>.<hash of the values>, a variant
    of its own (the recipe's own set is never rebuilt over)."""
    return load_role(role, None, sets).recipe.dataset_name


def test_a_command_that_reads_both_recipes_takes_keys_of_both(project: Path, cli) -> None:
    """`--set` goes to the role or the pipeline recipe by its first part."""
    assert cli("distill")[0] == 0
    assert cli("dataset", "answer")[0] == 0
    kept = rows(project, "train_answer_instruct")
    code, out, err = cli("dataset", "answer", "--set", "teacher.keep=all", "--set", "dataset.seed=1")
    assert code == 0, err
    variant = variant_dataset("answer", "dataset.seed=1")
    assert variant.startswith("train_answer_instruct.") and len(rows(project, variant)) > len(kept)
    assert rows(project, "train_answer_instruct") == kept  # the recipe's own set untouched


SET_ERRORS = [
    pytest.param(["dataset", "answer", "--set", "teachr.keep=all"],
                 "Error: --set teachr.keep=all: teachr is not a recipe key; valid keys start with data, dataset, "
                 "distributed, fewshot, inference, keep, merge, model, name, package, preference, role, serve, teacher, train (did you mean teacher?)",
                 id="typo-in-section"),
    pytest.param(["train", "answer", "--set", "teacher.keep=all"],
                 "Error: --set teacher.keep=all: teacher is not a recipe key (a key of the other kind of recipe, "
                 "which this command does not read); valid keys start with dataset, distributed, fewshot, keep, "
                 "merge, model, name, preference, role, serve, train", id="pipeline-key-to-a-role-command"),
    pytest.param(["distill", "--set", "train.lora_rank=8"],
                 "Error: --set train.lora_rank=8: train is not a recipe key (a key of the other kind of recipe, "
                 "which this command does not read); valid keys start with data, inference, package, teacher",
                 id="role-key-to-a-pipeline-command"),
    pytest.param(["dataset", "answer", "--set", "teacher.kep=all"],
                 "Error: --set: teacher.kep is not a recipe key (did you mean keep?)", id="typo-in-key"),
]


@pytest.mark.parametrize("args, message", SET_ERRORS)
def test_set_names_what_the_user_typed(project: Path, cli, args: list[str], message: str) -> None:
    code, out, err = cli(*args)
    assert (code, err) == (2, message + "\n")


@pytest.mark.parametrize("val_size", [0.1, 0.25, 0.5])
def test_validation_split_keeps_problems_whole(project: Path, val_size: float) -> None:
    questions = read_dataset(project / "datasets/sample/train.jsonl").questions
    train, val = split_by_problem(questions, val_size, seed=0)
    assert {q.problem_id for q in train}.isdisjoint({q.problem_id for q in val})
    assert len(train) + len(val) == len(questions) and val
    assert split_by_problem(questions, val_size, seed=0) == (train, val)  # deterministic


def test_val_split_written_and_registered(project: Path, cli) -> None:
    assert cli("distill")[0] == 0
    code, out, err = cli("dataset", "evaluate", "--set", "dataset.val_size=0.2")
    assert code == 0, err
    assert "held out by problem" in out
    held = load_role("evaluate", None, ["dataset.val_size=0.2"]).recipe.eval_dataset_name  # the variant's
    assert held.startswith("val_evaluate_instruct.")
    info = json.loads((project / "datasets/dataset_info.json").read_text())
    assert info[held]["file_name"] == f"{held}.json"
    assert rows(project, held)


def test_no_cached_reply_is_a_clear_error(project: Path) -> None:
    with pytest.raises(UserError) as info:
        build_dataset(role=load_role("answer"), pipeline=load_pipeline())
    assert "run `orchestrator distill` first" in info.value.lines[0]


def test_uses_the_last_distillation_settings(project: Path) -> None:
    """`distill --teacher-model X` then `dataset`: the replies of X, without editing a recipe."""
    train = make_train(project / "train.jsonl", problems=2, per_problem=2)
    with FakeOpenAI() as server:
        distill(pipeline=load_pipeline(None, teacher_flags(server.url)), input_path=str(train), echo=False)
    summary = build_dataset(role=load_role("answer"), pipeline=load_pipeline(), input_path=str(train))
    assert summary.train == 4 and summary.missing == 0


def test_prompt_lengths_in_tokens_with_a_tokenizer(project: Path, cli, tiny_model_dir: Path) -> None:
    assert cli("distill")[0] == 0
    summary = build_dataset(role=load_role("answer"), pipeline=load_pipeline(), tokenizer=str(tiny_model_dir))
    tokens = summary.prompt_tokens
    assert 0 < tokens["min"] <= tokens["mean"] <= tokens["max"]
    assert any(line.startswith("prompt tokens: min ") for line in summary.lines())


def test_a_distill_run_that_got_nothing_changes_nothing(project: Path, cli) -> None:
    from orchestrator.core.common.process import free_port

    assert cli("distill")[0] == 0
    dead = f"http://127.0.0.1:{free_port()}/v1"
    code, out, err = cli("distill", "--teacher-url", dead, "--teacher-model", "qwen", "--limit", "2",
                         "--set", "teacher.max_retries=0")
    assert code == 1
    assert build_dataset(role=load_role("answer"), pipeline=load_pipeline()).train > 0  # still the sample's replies


def _build(role: str, *overrides: str):
    return build_dataset(role=load_role(role, None, overrides), pipeline=load_pipeline())


def test_both_roles_hold_out_the_same_problems_written_as_val_jsonl(project: Path, cli) -> None:
    assert cli("distill")[0] == 0
    split = ("dataset.val_size=0.2", "dataset.seed=3")
    answer = _build("answer", *split)
    _build("evaluate", *split)
    assert answer.dropped > 0  # keep: agreeing drops replies, yet the held-out problems are the same
    names = {role: variant_dataset(role, *split) for role in ("answer", "evaluate")}  # the same hash: one split
    assert names == {role: f"train_{role}_instruct.{names['answer'].rsplit('.', 1)[1]}" for role in names}
    records = [json.loads((project / f"datasets/{names[role]}.sources.json").read_text())["split"]
               for role in ("answer", "evaluate")]
    assert records[0]["val_problems"] == records[1]["val_problems"] and len(records[0]["val_problems"]) == 6
    assert records[0]["seed"] == 3 and records[0]["val_size"] == 0.2

    train = read_dataset(project / "datasets/sample/train.jsonl")
    # a --set variant's held-out problems are its own file: the recipe's datasets/val.jsonl is never rewritten
    val = read_dataset(project / f"datasets/val.{names['answer'].rsplit('.', 1)[1]}.jsonl")
    assert not (project / "datasets/val.jsonl").exists()
    assert [p.id for p in val.problems] == records[0]["val_problems"]
    gold = {q.qid: q.answer for q in train.questions}
    assert val.questions and all(q.answer == gold[q.qid] for q in val.questions)  # competition format, answers kept
    held = {answer_prompt(q) for q in val.questions}
    assert not held & {r["instruction"] for r in rows(project, names["answer"])}
    trained_on = {r["instruction"] for r in rows(project, names["evaluate"])}
    assert not {q.qid for q in val.questions if any(q.question in i and q.problem in i for i in trained_on)}


def test_no_validation_split_is_recorded_too(project: Path, cli) -> None:
    assert cli("distill")[0] == 0
    _build("answer")
    record = json.loads((project / "datasets/train_answer_instruct.sources.json").read_text())["split"]
    assert record["val_problems"] == [] and not (project / "datasets/val.jsonl").exists()
