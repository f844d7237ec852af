"""Recipe loading: extends, --set overrides, and one error line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.common.errors import UserError
from orchestrator.core.recipes.loading import load, load_pipeline, load_role
from orchestrator.core.recipes.overrides import parse_override
from orchestrator.core.recipes.schema import RoleRecipe


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_recipes_load(project: Path) -> None:
    for role in ("answer", "evaluate"):
        for variant in ("", "tiny-"):
            loaded = load_role(role, f"recipes/{variant}{role}.yaml")
            assert loaded.recipe.role == role
            assert loaded.recipe.dataset_name == f"train_{role}_instruct"
    assert load_pipeline().recipe.teacher.api_key_env == "DEEPSEEK_API_KEY"


def test_extends_and_precedence(project: Path) -> None:
    loaded = load_role("evaluate", "recipes/tiny-evaluate.yaml", ["train.lora_rank=32"])
    recipe = loaded.recipe
    assert recipe.run_name.startswith("tiny-evaluate@")  # a variant: its own run folder (test_variants.py)
    assert recipe.train["lora_rank"] == 32  # --set beats tiny-answer.yaml's 4
    assert recipe.train["learning_rate"] == 1.0e-2 and recipe.train["lr_scheduler_type"] == "cosine"
    assert "bf16" in recipe.train and recipe.train["bf16"] is None  # null removes the parent's key
    assert loaded.where("train.lora_rank") == "--set"
    assert loaded.where("train.lora_alpha") == "recipes/tiny-answer.yaml"
    assert loaded.where("train.lr_scheduler_type") == "recipes/answer.yaml"


@pytest.mark.parametrize(
    "item, key, value",
    [
        ("train.learning_rate=5e-5", "train.learning_rate", 5e-5),  # a number, as LLaMA-Factory reads it
        ("train.learning_rate=-2E+3", "train.learning_rate", -2000.0),
        ("model.path=5e-5x", "model.path", "5e-5x"),
        ("train.num_train_epochs=2", "train.num_train_epochs", 2),
        ("train.bf16=false", "train.bf16", False),
        ("train.bf16=null", "train.bf16", None),
        ("serve.args={vllm_maxlen: 4096}", "serve.args", {"vllm_maxlen": 4096}),
        ("model.path=a=b", "model.path", "a=b"),  # split on the first '='
        ("train.lora_target=q_proj,v_proj", "train.lora_target", "q_proj,v_proj"),
    ],
)
def test_parse_override(item: str, key: str, value: object) -> None:
    assert parse_override(item) == (key, value)


BAD = [
    # (recipe text, overrides, expected error lines)
    ("role: answer\nmodel:\n  tempalte: qwen\n", [], ["{f}: model.tempalte is not a recipe key (did you mean template?)"]),
    ("role: answer\nserve:\n  port: many\n", [], ["{f}: serve.port input should be a valid integer, unable to parse string as an integer, got 'many'"]),
    ("role: answr\n", [], ["{f}: role must be one of 'answer' or 'evaluate', got 'answr'"]),
    ("extends: nowhere.yaml\nrole: answer\n", [], ["{f}: extends nowhere.yaml, which does not exist (looked for {d}/nowhere.yaml)"]),
    ("role: answer\n", ["train.lr"], ["--set train.lr: expected KEY=VALUE, e.g. --set train.learning_rate=5e-5"]),
    ("role: answer\n", ["=3"], ["--set =3: the key before '=' must be a dotted name such as train.learning_rate"]),
    ("role: answer\n", ["dataset.name=../x"], ["--set: dataset.name a dataset name is a plain word such as train_answer_instruct (no path, no .json)"]),
    ("role: answer\n", ["name=../../etc"], ["--set: name a run name is a plain word (no path): the run goes to runs/<name>/"]),
    ("role: answer\n", ["role.x=1"], ["--set role.x: role is a value, not a section"]),
    # a section the override created is blamed on --set, not on the file that never had it
    ("role: answer\n", ["distributed.deepspeed.x=1"], ["--set: distributed.deepspeed must be one of 0, 2 or 3, got {{'x': 1}}"]),
    ("role: answer\nmodel: [1, 2\n", [], ["{f}:3: not valid YAML (expected ',' or ']', but got '<stream end>')"]),
    ("- a\n- b\n", [], ["{f}: a recipe is a mapping of keys, not a list"]),
    (
        "role: answer\nmodel:\n  tempalte: qwen\ndistributed:\n  deepspeed: 1\n",
        [],
        ["{f}: model.tempalte is not a recipe key (did you mean template?)", "{f}: distributed.deepspeed must be one of 0, 2 or 3, got 1"],
    ),
]


@pytest.mark.parametrize("text, overrides, expected", BAD)
def test_bad_recipes_report_every_problem(project: Path, text: str, overrides: list[str], expected: list[str]) -> None:
    path = write(project / "recipes" / "bad.yaml", text)
    with pytest.raises(UserError) as info:
        load(path, RoleRecipe, overrides)
    assert info.value.lines == [e.format(f="recipes/bad.yaml", d=project / "recipes") for e in expected]


def test_extends_cycle(project: Path) -> None:
    write(project / "recipes" / "a.yaml", "extends: b.yaml\nrole: answer\n")
    write(project / "recipes" / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(UserError, match="extends itself"):
        load_role("answer", "recipes/a.yaml")


def test_role_mismatch(project: Path) -> None:
    with pytest.raises(UserError, match="role is evaluate, but this command is for the answer model"):
        load_role("answer", "recipes/evaluate.yaml")


def test_cli_typo_exit_2(project: Path, cli) -> None:
    write(project / "recipes" / "typo.yaml", "extends: answer.yaml\nmodel:\n  tempalte: qwen\n")
    code, out, err = cli("render", "answer", "--recipe", "recipes/typo.yaml")
    assert code == 2
    assert err == "Error: recipes/typo.yaml: model.tempalte is not a recipe key (did you mean template?)\n"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["infer", "datasets/sample/test.jsonl", "--out-dir", "out", "--pipeline", "recipes/tiny-answer.yaml"],
         "Error: recipes/tiny-answer.yaml is a role recipe (it has role:); this command takes a pipeline recipe such as recipes/pipeline.yaml"),
        (["train", "answer", "--recipe", "recipes/tiny-pipeline.yaml"],
         "Error: recipes/tiny-pipeline.yaml is a pipeline recipe; this command takes a role recipe such as recipes/answer.yaml"),
    ],
)
def test_the_other_kind_of_recipe_is_named(project: Path, cli, args: list[str], expected: str) -> None:
    code, out, err = cli(*args)
    assert (code, err.strip()) == (2, expected)


@pytest.mark.parametrize("inference, listed", [
    ({}, [{"recipe": "recipes/answer.yaml", "url": None, "model": None}]),
    ({"answer_recipe": "recipes/a2.yaml", "answer_model": "m"}, [{"recipe": "recipes/a2.yaml", "url": None, "model": "m"}]),
    ({"answer_url": "http://h:1/v1"}, [{"recipe": None, "url": "http://h:1/v1", "model": None}]),
    ({"answer_url": "http://h:1/v1", "answer_model": "m", "answer_models": []},
     [{"recipe": None, "url": "http://h:1/v1", "model": "m"}]),
    ({"answer_models": [{"url": "http://h:1/v1"}, {"recipe": "r.yaml", "model": "b"}]},
     [{"recipe": None, "url": "http://h:1/v1", "model": None}, {"recipe": "r.yaml", "url": None, "model": "b"}]),
])
def test_the_answer_shorthand_is_folded_into_answer_models(inference, listed):
    from orchestrator.core.recipes.schema import InferenceSection

    assert [m.model_dump() for m in InferenceSection.model_validate(inference).answer_models] == listed
