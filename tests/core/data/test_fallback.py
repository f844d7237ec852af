"""The fallback letter (core/data/fallback.py): the training file's most frequent gold letter
after fixes, said with its count; `A` without a training file or gold letters; a fixed letter or
none as `inference.fallback` says."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import qids, write_file

from orchestrator.core.data.fallback import fallback_letter, prior_letter
from orchestrator.core.recipes.loading import load_pipeline

SHAPE = [3, 2]  # five questions

PRIOR = [  # (gold letters in question order, fixes, the letter, what is said after "fallback: ")
    pytest.param("ABBCB", None, "B", "B, the most frequent gold letter of {train} (3 of 5, 60%)", id="most-frequent"),
    pytest.param("ABBAC", None, "A", "A, the most frequent gold letter of {train} (2 of 5, 40%)", id="a-tie-takes-the-earlier"),
    pytest.param("ABBCB", {1: "C", 2: "C"}, "C", "C, the most frequent gold letter of {train} (3 of 5, 60%)",
                 id="after-fixes"),
    pytest.param("-----", None, "A", "{train} has no gold letters; using A", id="no-gold"),
    pytest.param(None, None, "A", "no training file {train} to take the prior from; using A", id="no-file"),
]


@pytest.mark.parametrize("golds, fixes, letter, said", PRIOR)
def test_the_prior_letter(tmp_path: Path, capsys, golds: str | None, fixes: dict[int, str] | None, letter: str,
                          said: str) -> None:
    train = tmp_path / "train.jsonl"
    ids = qids(SHAPE)
    if golds is not None:
        write_file(train, SHAPE, {q: (g if g != "-" else None) for q, g in zip(ids, golds)})
    fixes_file = None
    if fixes:
        fixes_file = tmp_path / "fixes.yaml"
        fixes_file.write_text("".join(f"{ids[i]}: {g}\n" for i, g in fixes.items()), encoding="utf-8")
    assert prior_letter(train, fixes_file, "infer") == letter
    assert f"[infer] fallback: {said.format(train=train)}" in capsys.readouterr().err


@pytest.mark.parametrize("setting, expected", [("prior", "B"), ("C", "C"), (None, None)])
def test_the_recipe_setting_chooses(project: Path, setting: str | None, expected: str | None) -> None:
    write_file(project / "datasets" / "mine.jsonl", SHAPE, dict(zip(qids(SHAPE), "ABBCB")))
    recipe = load_pipeline(project / "recipes" / "pipeline.yaml",
                           ["data.train=datasets/mine.jsonl", "data.fixes=null", f"inference.fallback={'null' if setting is None else setting}"])
    assert fallback_letter(recipe.recipe) == expected
