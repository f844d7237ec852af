"""core/recipes/overrides.py: naming_make_variables, the make variables `orchestrator run` names
around its stages (the rest of the module: --set parsing in test_recipes.py, test_fuzz.py)."""

from __future__ import annotations

import os

import pytest

from orchestrator.core.recipes.overrides import MAKE_VARIABLES_ENV, make_variables, naming_make_variables

# (the variable before, the names given, what make_variables() reads inside)
NAMED = [
    (None, {"data.train": "TRAIN", "teacher.base_url": "TEACHER_URL"},
     {"data.train": "TRAIN", "teacher.base_url": "TEACHER_URL"}),
    ("data.test=TEST", {"data.train": "TRAIN"}, {"data.train": "TRAIN"}),  # this call's names, not the outer ones
    ("data.test=TEST", {}, {}),
]


@pytest.mark.parametrize("before, names, inside", NAMED, ids=["unset-before", "set-before", "none-named"])
def test_naming_make_variables_and_restoring_them(monkeypatch: pytest.MonkeyPatch, before: str | None,
                                                  names: dict[str, str], inside: dict[str, str]) -> None:
    if before is None:
        monkeypatch.delenv(MAKE_VARIABLES_ENV, raising=False)
    else:
        monkeypatch.setenv(MAKE_VARIABLES_ENV, before)
    with pytest.raises(RuntimeError), naming_make_variables(names):
        assert make_variables() == inside
        raise RuntimeError("a stage failed")  # restored all the same
    assert os.environ.get(MAKE_VARIABLES_ENV) == before
