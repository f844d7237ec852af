"""A --set that changes what a model is made of names a variant with its own run folder (and its
own dataset when it changes the training set); runs/<name>/ stays the recipe's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.recipes.loading import load_role


@pytest.mark.parametrize("sets, run, dataset", [
    ((), "tiny-answer", "train_answer_instruct"),
    (("serve.port=9000", "serve.weights=adapter"), "tiny-answer", "train_answer_instruct"),  # how it is served
    (("train.learning_rate=0.01",), "tiny-answer", "train_answer_instruct"),  # the value the recipe has
    (("train.learning_rate=0.001",), "tiny-answer@", "train_answer_instruct"),
    (("model.path=models/tiny-qwen2-gptq",), "tiny-answer@", "train_answer_instruct"),
    (("merge.export_quantization_bit=4",), "tiny-answer@", "train_answer_instruct"),
    (("dataset.val_size=0",), "tiny-answer@", "train_answer_instruct."),  # a training set of its own
    (("fewshot.k=2",), "tiny-answer@", "train_answer_instruct."),
    (("train.learning_rate=0.001", "name=mine"), "mine", "train_answer_instruct"),  # named: as given
    (("dataset.val_size=0", "dataset.name=train_small"), "tiny-answer@", "train_small"),
])
def test_a_variant_is_named_by_what_it_changes(project: Path, sets: tuple[str, ...], run: str, dataset: str) -> None:
    recipe = load_role("answer", "recipes/tiny-answer.yaml", list(sets)).recipe
    assert recipe.run_name.startswith(run) and (run.endswith("@") or recipe.run_name == run)
    assert recipe.dataset_name.startswith(dataset) and (dataset.endswith(".") or recipe.dataset_name == dataset)
    if run.endswith("@"):
        assert len(recipe.run_name) == len(run) + 8


def test_the_same_change_names_the_same_variant_and_another_another(project: Path) -> None:
    def name(*sets: str) -> str:
        return load_role("answer", "recipes/tiny-answer.yaml", list(sets)).recipe.run_name
    a = name("train.learning_rate=0.001", "train.max_steps=5")
    assert a == name("train.max_steps=5", "train.learning_rate=1.0e-3")  # order and spelling do not matter
    assert a == name("train.max_steps=5", "train.learning_rate=1e-3")  # PyYAML alone reads `1e-3` as text
    assert a != name("train.learning_rate=0.001") != name("train.max_steps=5")
    # a recipe that extends the tiny one by the same values is a recipe of its own: its own name
    (project / "recipes" / "mine.yaml").write_text("extends: tiny-answer.yaml\nname: mine\ntrain:\n  max_steps: 5\n")
    assert load_role("answer", "recipes/mine.yaml").recipe.run_name == "mine"
    # in a recipe file too: `1e-2` is tiny-answer.yaml's own 1.0e-2, so no variant
    (project / "recipes" / "same.yaml").write_text("extends: tiny-answer.yaml\ntrain:\n  learning_rate: 1e-2\n")
    assert load_role("answer", "recipes/same.yaml").recipe.train["learning_rate"] == 0.01
