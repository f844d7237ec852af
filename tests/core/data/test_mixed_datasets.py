"""dataset.extra: more training sets (alpaca or sharegpt, JSON or JSONL) beside the role's own,
registered in dataset_info.json, checked by LLaMA-Factory's parser, and trained on for real."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from orchestrator.core.recipes.loading import load_role

ALPACA = [{"instruction": f"题目{i}：谁说了真话？", "input": "", "output": f"答案是：{'ABCD'[i % 4]}"} for i in range(6)]
CONVERSATIONS = [{"conversations": [{"from": "human", "value": f"问题{i}"}, {"from": "gpt", "value": "答案是：A"}]}
                 for i in range(5)]
MESSAGES = [{"messages": [{"role": "system", "content": "你是逻辑专家"}, {"role": "user", "content": f"问题{i}"},
                          {"role": "assistant", "content": "答案是：B"}]} for i in range(4)]


def write(path: Path, rows: list, jsonl: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if jsonl:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


def recipe_with(project: Path, extra: dict[str, str], base: str = "answer.yaml", train: str = "") -> Path:
    lines = [f"extends: {base}", "dataset:", "  extra:"] + [f"    {k}: {v}" for k, v in extra.items()]
    path = project / "recipes" / "extra.yaml"
    path.write_text("\n".join(lines) + "\n" + train, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "rows, jsonl, entry",
    [
        (ALPACA, False, {"formatting": "alpaca", "columns": {"prompt": "instruction", "query": "input", "response": "output"}}),
        (ALPACA, True, {"formatting": "alpaca", "columns": {"prompt": "instruction", "query": "input", "response": "output"}}),
        (CONVERSATIONS, True, {"formatting": "sharegpt", "columns": {"messages": "conversations"}}),
        (MESSAGES, False, {"formatting": "sharegpt", "columns": {"messages": "messages"},
                           "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                    "assistant_tag": "assistant", "system_tag": "system"}}),
    ],
)
def test_extra_registered_listed_and_accepted(project: Path, cli, rows, jsonl, entry) -> None:
    file = write(project / "data" / ("more.jsonl" if jsonl else "more.json"), rows, jsonl)
    recipe = recipe_with(project, {"more_logic": f"data/{file.name}"})
    code, _out, err = cli("check", "answer", "--recipe", recipe)
    assert code == 0, err
    info = json.loads((project / "datasets" / "dataset_info.json").read_text())
    assert info["more_logic"] == {"file_name": str(file), **entry}
    assert "train_answer_instruct" in info
    train_yaml = (project / "runs" / "answer" / "train.yaml").read_text()
    assert "dataset: train_answer_instruct,more_logic\n" in train_yaml


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("gone", None, r"dataset\.extra\.gone: data/gone\.jsonl does not exist"),
        ("broken", "{not json", r"dataset\.extra\.broken: data/broken\.json: not valid JSON"),
        ("badline", '{"instruction": "a", "output": "b"}\n{oops\n', r"dataset\.extra\.badline: data/badline\.jsonl: line 2 is not valid JSON"),
        ("obj", '{"instruction": "a", "output": "b"}', r"dataset\.extra\.obj: data/obj\.json: a JSON file must hold a list of examples, not a dict"),
        ("empty", "[]", r"dataset\.extra\.empty: data/empty\.json: it holds no examples"),
        ("strings", '["a", "b"]', r"dataset\.extra\.strings: data/strings\.json: example 1: an example must be an object, not a str"),
        ("chat", '[{"prompt": "a", "completion": "b"}]', r"dataset\.extra\.chat: data/chat\.json: example 1: an example is neither alpaca .* nor sharegpt"),
        ("mixed", json.dumps([ALPACA[0], CONVERSATIONS[0]]), r"example 2 is conversations but the first is alpaca; one file holds one format"),
        ("text", "x", r"dataset\.extra\.text: data/text\.txt: expected a \.json or \.jsonl file"),
        ("train_answer_instruct", "[]", r"dataset\.extra\.train_answer_instruct: train_answer_instruct names a role's own set"),
        ("val_evaluate_instruct", "[]", r"dataset\.extra\.val_evaluate_instruct: val_evaluate_instruct names a role's own set"),
    ],
)
def test_bad_extra_is_one_error_naming_the_key(project: Path, cli, name, content, expected) -> None:
    suffix = {"badline": ".jsonl", "gone": ".jsonl", "text": ".txt"}.get(name, ".json")
    file = project / "data" / f"{name}{suffix}"
    if content is not None:
        file.parent.mkdir(exist_ok=True)
        file.write_text(content, encoding="utf-8")
    recipe = recipe_with(project, {name: f"data/{file.name}"})
    code, _out, err = cli("check", "answer", "--recipe", recipe)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: recipes/extra.yaml: dataset.extra."), err
    assert re.search(expected, lines[0]), lines[0]
    assert not (project / "runs" / "answer" / "train.yaml").exists()  # refused before anything was written


@pytest.mark.parametrize("name", ["../up", "a/b", "x.json", "dataset_info"])
def test_extra_names_are_plain(project: Path, cli, name: str) -> None:
    code, _out, err = cli("check", "answer", "--set", f"dataset.extra={json.dumps({name: 'd.json'})}")
    assert code == 2 and "dataset.extra" in err


def test_dataset_command_refuses_a_missing_extra_first(project: Path, cli) -> None:
    code, _out, err = cli("dataset", "answer", "--set", "dataset.extra.more=data/none.json")
    assert code == 2
    assert err.strip().startswith("Error: --set: dataset.extra.more: data/none.json does not exist")
    assert not (project / "datasets" / "train_answer_instruct.json").exists()


@pytest.mark.parametrize(
    "train, problem",
    [
        ("  mix_strategy: interleave_under\n  interleave_probs: '0.7,0.3'\n", None),
        ("  mix_strategy: interleave_over\n  interleave_probs: '0.5'\n", "The length of dataset and interleave probs should be identical"),
        ("  mix_strategy: concat\n  interleave_probs: '0.5,0.5'\n", "interleave_probs` is only valid for interleaved mixing"),
        ("  mix_strategy: shuffle\n", "train.mix_strategy: LLaMA-Factory says"),
    ],
)
def test_mixing_through_llamafactory_keys(project: Path, cli, train: str, problem: str | None) -> None:
    write(project / "data" / "more.json", ALPACA, jsonl=False)
    recipe = recipe_with(project, {"more": "data/more.json"}, train="train:\n" + train)
    code, _out, err = cli("check", "answer", "--recipe", recipe)
    if problem is None:
        assert code == 0, err
        assert "mix_strategy: interleave_under" in (project / "runs/answer/train.yaml").read_text()
    else:
        assert code == 2 and problem in err, err


@pytest.mark.slow
def test_trains_the_tiny_model_on_both_sets(tiny_project: Path, cli) -> None:
    assert cli("distill")[0] == 0
    code, _out, err = cli("dataset", "answer", "--recipe", "recipes/tiny-answer.yaml")
    assert code == 0, err
    own = len(json.loads((tiny_project / "datasets/train_answer_instruct.json").read_text()))
    write(tiny_project / "data" / "gpt4.jsonl", ALPACA, jsonl=True)
    write(tiny_project / "data" / "chat.json", MESSAGES, jsonl=False)
    recipe = recipe_with(tiny_project, {"gpt4_logic": "data/gpt4.jsonl", "chat": "data/chat.json"},
                         base="tiny-answer.yaml", train="train:\n  max_steps: 4\n  save_steps: 4\n")
    code, _out, err = cli("train", "answer", "--recipe", recipe)
    assert code == 0, err
    log = (tiny_project / "runs/tiny-answer/train.log").read_text()
    for n in (own, len(ALPACA), len(MESSAGES)):  # each set read and converted by LLaMA-Factory
        assert f"Converting format of dataset: 100%|██████████| {n}/{n} " in log
    total = own + len(ALPACA) + len(MESSAGES)  # then concatenated (mix_strategy: concat) and tokenized
    assert re.search(rf"Running tokenizer on dataset: 100%.*\b{total}/{total}\b", log)
    manifest = json.loads((tiny_project / "runs/tiny-answer/manifest.json").read_text())
    assert manifest["data"]["extra"] == {
        "gpt4_logic": {"file": "data/gpt4.jsonl", "format": "alpaca", "examples": len(ALPACA)},
        "chat": {"file": "data/chat.json", "format": "sharegpt", "examples": len(MESSAGES)},
    }
    assert manifest["data"]["dataset"]["sources"][0]["kind"] == "gold"


def test_evaluate_recipe_drops_an_inherited_extra_with_null(project: Path, cli) -> None:
    write(project / "data" / "more.json", ALPACA, jsonl=False)
    (project / "recipes" / "answer.yaml").write_text(
        (project / "recipes" / "answer.yaml").read_text().replace("  extra: {}", "  extra: {more: data/more.json}"))
    code, _out, err = cli("render")
    assert code == 0, err
    assert "dataset: train_answer_instruct,more\n" in (project / "runs/answer/train.yaml").read_text()
    assert "dataset: train_evaluate_instruct,more\n" in (project / "runs/evaluate/train.yaml").read_text()
    code, _out, err = cli("render", "evaluate", "--set", "dataset.extra.more=null")
    assert code == 0, err
    # a variant (its own run folder: the recipe's model stays) on the recipe's own built set
    variant = load_role("evaluate", None, ["dataset.extra.more=null"]).recipe.run_name
    assert variant.startswith("evaluate@")
    assert "dataset: train_evaluate_instruct\n" in (project / "runs" / variant / "train.yaml").read_text()
    assert "dataset: train_evaluate_instruct,more\n" in (project / "runs/evaluate/train.yaml").read_text()
