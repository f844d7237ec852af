"""A preference recipe's reference is the SFT model: rendered for LLaMA-Factory (a new adapter on
the merged SFT model, or the SFT adapter going on with ref_model + ref_model_adapters), accepted
by its parser, and `check` refuses a recipe whose reference would be the base model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from orchestrator.core.common.errors import UserError
from orchestrator.core.llamafactory.checks import check_roles
from orchestrator.core.llamafactory.reference import reference_problems
from orchestrator.core.recipes.loading import load_role


@pytest.mark.parametrize("recipe, sft, base", [
    ("recipes/tiny-answer-dpo.yaml", "tiny-answer", "models/tiny-qwen2"),
    ("recipes/answer-dpo.yaml", "answer", "models/qwen/Qwen2-7B-Instruct"),
])
@pytest.mark.parametrize("reference", ["merged", "adapter"])
def test_the_sft_model_is_the_reference(project: Path, recipe: str, sft: str, base: str, reference: str) -> None:
    loaded = load_role("answer", recipe, [f"preference.reference={reference}"])
    rendered = check_roles([loaded])[0]  # LLaMA-Factory's parser accepts both
    train = yaml.safe_load(rendered.paths.train_yaml.read_text(encoding="utf-8"))
    merge = yaml.safe_load(rendered.paths.merge_yaml.read_text(encoding="utf-8"))
    assert train["stage"] == "dpo" and train["pref_ftx"] == 1.0 and train["pref_loss"] == "sigmoid"
    assert train["dataset"] == loaded.recipe.dataset_name and "eval_dataset" not in train  # held-out never asked
    sft_adapter = str(project / "runs" / sft / "adapter")
    if reference == "merged":  # a new adapter on the merged SFT model: disabled, it is the SFT model
        assert train["model_name_or_path"] == merge["model_name_or_path"] == str(project / "runs" / sft / "merged")
        assert not {"ref_model", "ref_model_adapters", "adapter_name_or_path"} & set(train)
    else:  # the SFT adapter goes on training; the reference is base + the SFT adapter
        assert train["model_name_or_path"] == train["ref_model"] == merge["model_name_or_path"] == str(project / base)
        assert train["adapter_name_or_path"] == train["ref_model_adapters"] == sft_adapter
    assert merge["adapter_name_or_path"] == str(project / "runs" / loaded.recipe.run_name / "adapter")
    info = json.loads((project / "datasets" / "dataset_info.json").read_text(encoding="utf-8"))
    assert info[loaded.recipe.dataset_name]["ranking"] is True


def _write(project: Path, name: str, text: str) -> str:
    (project / "recipes" / name).write_text(text, encoding="utf-8")
    return f"recipes/{name}"


DPO_ON_BASE = "extends: tiny-answer.yaml\nname: d\ndataset: {name: pref_d}\ntrain: {stage: dpo}\n"
REFUSED = [
    # recipe text (besides the shipped ones), other files, what the one problem says
    (DPO_ON_BASE, {}, "recipes/x.yaml: train.stage dpo without preference.sft_recipe: LLaMA-Factory would take the "
     "base model models/tiny-qwen2 as the reference (with LoRA and no ref_model it disables the adapter)"),
    (DPO_ON_BASE.replace("stage: dpo", "stage: dpo, pref_loss: orpo"), {},
     "train.stage dpo needs preference.sft_recipe: the pairs are the SFT model's own replies"),
    ("extends: tiny-answer-dpo.yaml\npreference: {sft_recipe: recipes/sft.yaml}\n",
     {"sft.yaml": "extends: tiny-answer.yaml\nserve: {weights: adapter}\n"},
     "recipes/sft.yaml serves its adapter (serve.weights adapter), so its merged model is never built"),
    ("extends: tiny-answer-dpo.yaml\npreference: {sft_recipe: recipes/sft.yaml}\n",
     {"sft.yaml": "extends: tiny-answer.yaml\nmodel: {path: models/q}\n",
      "../models/q/config.json": '{"quantization_config": {"quant_method": "gptq", "bits": 4}}'},
     "the SFT model's base models/q is gptq-quantized and nothing merges into it; set "
     "preference.reference: adapter"),
    ("extends: tiny-answer-dpo.yaml\ndataset: {val_size: 0.1}\n", {},
     "dataset.val_size 0.1 and seed 0 differ from the SFT recipe's (0.2, 0)"),
    ("extends: tiny-answer-dpo.yaml\nname: tiny-answer\n", {}, "is this recipe's own run (runs/tiny-answer)"),
    ("extends: tiny-answer-dpo.yaml\npreference: {reference: adapter}\ntrain: {finetuning_type: full}\n", {},
     "preference.reference adapter goes on training the SFT LoRA adapter; train.finetuning_type is full"),
    ("extends: tiny-answer-dpo.yaml\npreference: {sft_recipe: recipes/nope.yaml}\n", {},
     "preference.sft_recipe: recipes/nope.yaml does not exist"),
]


@pytest.mark.parametrize("text, others, expected", REFUSED)
def test_check_refuses_a_reference_that_is_not_the_sft_model(project: Path, text: str, others: dict[str, str],
                                                              expected: str) -> None:
    for name, content in others.items():
        path = project / "recipes" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    problems = reference_problems(load_role("answer", _write(project, "x.yaml", text)))
    assert len(problems) == 1 and expected.format(project=project) in problems[0], problems


def test_the_problem_names_where_the_key_was_set(project: Path) -> None:
    (project / "recipes" / "sft.yaml").write_text("extends: tiny-answer.yaml\nserve: {weights: adapter}\n",
                                                 encoding="utf-8")
    loaded = load_role("answer", "recipes/tiny-answer-dpo.yaml",
                       ["preference.sft_recipe=recipes/sft.yaml", "preference.reference=merged"])
    assert [p.split(": ")[0] for p in reference_problems(loaded)] == ["--set"]


def test_the_shipped_preference_recipes_have_no_problem(project: Path) -> None:
    for recipe in ("recipes/tiny-answer-dpo.yaml", "recipes/answer-dpo.yaml"):
        assert reference_problems(load_role("answer", recipe)) == []


def test_cli_check_says_why(project: Path, cli) -> None:
    code, out, err = cli("check", "answer", "--recipe", _write(project, "x.yaml", DPO_ON_BASE))
    assert code == 2 and err.count("Error:") == 1 and "would take the base model" in err
    code, out, err = cli("check", "answer", "--recipe", "recipes/tiny-answer-dpo.yaml")
    assert code == 0, err
    assert "reference: the SFT model runs/tiny-answer/merged" in out


@pytest.mark.parametrize("text, expected", [
    ("extends: tiny-answer.yaml\npreference: {sft_recipe: recipes/tiny-answer.yaml}\n",
     "preference.sft_recipe is for a preference training: set train.stage: dpo too"),
    ("extends: tiny-answer.yaml\ntrain: {stage: dpo}\n",
     "dataset.name a preference training needs a dataset.name of its own (e.g. pref_tiny_answer)"),
    ("extends: tiny-evaluate.yaml\nrole: evaluate\ndataset: {name: pref_e}\ntrain: {stage: dpo}\n",
     "train.stage dpo is for the Answer role"),
])
def test_recipe_errors(project: Path, text: str, expected: str) -> None:
    role = "evaluate" if "role: evaluate" in text else "answer"
    with pytest.raises(UserError) as e:
        load_role(role, _write(project, "x.yaml", text))
    assert len(e.value.lines) == 1 and expected in e.value.lines[0], e.value.lines


def test_the_reference_is_filled_in(project: Path) -> None:
    loaded = load_role("answer", _write(project, "x.yaml", "extends: tiny-answer-dpo.yaml\ntrain: {ref_model: m}\n"))
    with pytest.raises(UserError) as e:
        check_roles([loaded])
    assert "train.ref_model is filled in by the orchestrator; set preference.sft_recipe" in str(e.value)
