"""Rendered LLaMA-Factory configs, checked by LLaMA-Factory's own parser."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import cache_dir
from orchestrator.core.llamafactory import checks, parser
from orchestrator.core.llamafactory.checks import check_roles
from orchestrator.core.llamafactory.configs import deepspeed_config, render_roles
from orchestrator.core.recipes.loading import load_role


@pytest.mark.parametrize("variant", ["", "tiny-"])
def test_both_roles_render_and_pass_llamafactory(project: Path, variant: str) -> None:
    rendered = {r.loaded.recipe.role: r for r in check_roles([load_role("answer", f"recipes/{variant}answer.yaml")])}
    rendered.update({r.loaded.recipe.role: r for r in check_roles([load_role("evaluate", f"recipes/{variant}evaluate.yaml")])})
    for role, r in rendered.items():
        train = yaml.safe_load(r.paths.train_yaml.read_text())
        merge = yaml.safe_load(r.paths.merge_yaml.read_text())
        assert train["dataset"] == f"train_{role}_instruct"
        assert train["dataset_dir"] == str(project / "datasets")
        assert Path(train["dataset_dir"]).is_absolute()
        assert train["template"] == merge["template"] == "qwen"
        assert train["output_dir"] == merge["adapter_name_or_path"] == str(r.paths.adapter)
        assert merge["export_dir"] == str(r.paths.merged)
        text = r.paths.train_yaml.read_text()
        assert [h for h in ("### model", "### method", "### dataset", "### output", "### train") if h in text] == [
            "### model", "### method", "### dataset", "### output", "### train"
        ]
    info = json.loads((project / "datasets" / "dataset_info.json").read_text())
    assert info["train_answer_instruct"] == {
        "file_name": "train_answer_instruct.json",
        "formatting": "alpaca",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
    }
    assert "train_evaluate_instruct" in info


def test_cli_check_both_roles(project: Path, cli) -> None:
    code, out, err = cli("check")
    assert code == 0, err
    assert out.count("accepted by LLaMA-Factory") == 2


def test_qlora_70b_recipe_is_expressible(project: Path) -> None:
    """The 0.8788 solution's recipe, through --set, accepted by LLaMA-Factory's parser."""
    overrides = [
        "train.quantization_bit=4", "train.lora_rank=16", "train.lora_alpha=32", "train.cutoff_len=10240",
        "train.val_size=0.01", "train.eval_strategy=steps", "train.eval_steps=10", "train.per_device_eval_batch_size=1",
    ]
    (r,) = check_roles([load_role("answer", None, tuple(overrides))])
    train = yaml.safe_load(r.paths.train_yaml.read_text())
    assert (train["quantization_bit"], train["cutoff_len"], train["eval_steps"]) == (4, 10240, 10)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["train.learnig_rate=1e-4"], "--set: train.learnig_rate is not a LLaMA-Factory argument (did you mean learning_rate?)"),
        (["merge.export_sise=2"], "--set: merge.export_sise is not a LLaMA-Factory argument (did you mean export_size?)"),
        (["train.num_train_epochs=three"], "--set: train.num_train_epochs: LLaMA-Factory says: argument --num_train_epochs/--num-train-epochs: invalid float value: 'three'"),
        (["train.finetuning_type=bogus"], "--set: train.finetuning_type: LLaMA-Factory says: argument --finetuning_type/--finetuning-type: invalid choice: 'bogus'"),
        (["train.template=llama3"], "--set: train.template is filled in by the orchestrator; set model.template instead"),
        (["train.output_dir=/tmp/x"], "--set: train.output_dir is filled in by the orchestrator; set name (the run folder runs/<name>/) instead"),
        (["model.template=qwenn"], "--set: model.template qwenn is not a LLaMA-Factory chat template (did you mean qwen?)"),
    ],
)
def test_check_names_the_recipe_key(project: Path, overrides: list[str], expected: str) -> None:
    with pytest.raises(UserError) as info:
        check_roles([load_role("answer", None, tuple(overrides))])
    assert any(line.startswith(expected) or expected in line for line in info.value.lines), info.value.lines


def test_typo_in_recipe_file_names_the_file(project: Path, cli) -> None:
    (project / "recipes" / "mine.yaml").write_text("extends: answer.yaml\ntrain:\n  learnig_rate: 1.0e-4\n")
    code, out, err = cli("check", "answer", "--recipe", "recipes/mine.yaml")
    assert code == 2
    assert err == "Error: recipes/mine.yaml: train.learnig_rate is not a LLaMA-Factory argument (did you mean learning_rate?)\n"


def test_check_reads_the_rendered_yaml(project: Path) -> None:
    """The rendered file itself goes through LLaMA-Factory's parser, as llamafactory-cli reads it."""
    from orchestrator.core.llamafactory.checks import check_role

    (r,) = render_roles([load_role("answer")])
    assert check_role(r.loaded, r.paths) == []
    r.paths.train_yaml.write_text(r.paths.train_yaml.read_text() + "lora_rnk: 8\n")  # as a template bug would
    (problem,) = check_role(r.loaded, r.paths)
    assert "lora_rnk" in problem and "LLaMA-Factory says" in problem


def test_dataset_info_keeps_user_entries(project: Path) -> None:
    info = project / "datasets" / "dataset_info.json"
    info.write_text(json.dumps({"my_data": {"file_name": "mine.json"}}))
    render_roles([load_role("answer")])
    data = json.loads(info.read_text())
    assert set(data) == {"my_data", "train_answer_instruct"}


def test_val_size_registers_eval_dataset(project: Path) -> None:
    (r,) = check_roles([load_role("evaluate", None, ("dataset.val_size=0.1",))])
    train = yaml.safe_load(r.paths.train_yaml.read_text())
    held = r.loaded.recipe.eval_dataset_name  # a --set of val_size: a variant's own sets, val_evaluate_instruct.<hash>
    assert held.startswith("val_evaluate_instruct.") and train["dataset"] == held.replace("val_", "train_", 1)
    assert train["eval_dataset"] == held
    assert (train["eval_strategy"], train["eval_steps"], train["per_device_eval_batch_size"]) == ("steps", 100, 1)
    assert held in json.loads((project / "datasets" / "dataset_info.json").read_text())


@pytest.mark.parametrize("stage, offload", [(2, False), (3, False), (3, True)])
def test_deepspeed_config(project: Path, stage: int, offload: bool) -> None:
    overrides = [f"distributed.deepspeed={stage}", f"distributed.offload={str(offload).lower()}", "distributed.gpus_per_node=8"]
    (r,) = render_roles([load_role("answer", None, tuple(overrides))])
    ds = json.loads(r.paths.deepspeed.read_text())
    assert ds == deepspeed_config(r.loaded.recipe)
    zero = ds["zero_optimization"]
    assert zero["stage"] == stage
    assert ("offload_optimizer" in zero) == offload
    assert ("offload_param" in zero) == (offload and stage == 3)
    assert ds["train_micro_batch_size_per_gpu"] == "auto"
    train = yaml.safe_load(r.paths.train_yaml.read_text())
    assert train["deepspeed"] == str(r.paths.deepspeed)


def test_quantized_export_is_accepted_and_merge_yaml_only_merges(project: Path) -> None:
    """LLaMA-Factory quantizes no adapter: merge.yaml merges, the merged model is quantized apart."""
    (r,) = check_roles([load_role("answer", None, ("merge.export_quantization_bit=4",))])
    merge = yaml.safe_load(r.paths.merge_yaml.read_text())
    assert merge["adapter_name_or_path"] == str(r.paths.adapter)
    assert not [key for key in merge if key.startswith("export_quantization")]


def test_quantized_export_bits_are_checked(project: Path) -> None:
    with pytest.raises(UserError, match="merge.export_quantization_bit 5: LLaMA-Factory's GPTQ export takes 2, 3, 4, 8"):
        check_roles([load_role("answer", None, ("merge.export_quantization_bit=5",))])


def test_calibration_set_from_competition_prompts(project: Path) -> None:
    """GPTQ calibration takes only samples longer than export_quantization_maxlen tokens."""
    from orchestrator.core.data.competition import read_dataset
    from orchestrator.core.llamafactory.gptq import calibration_texts

    questions = read_dataset(project / "datasets/sample/train.jsonl").questions
    texts = calibration_texts(questions, maxlen=512)
    assert len(texts) > 5
    assert all(len(t["text"]) > 4 * 512 for t in texts)
    assert "### 题目:" in texts[0]["text"]


def _count_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The parser passes check_roles runs from now on (they still run, and still refuse)."""
    calls: list[str] = []
    for name in ("_unknown_names", "_parsed"):
        real = getattr(checks, name)
        monkeypatch.setattr(checks, name, lambda *args, _real=real, _name=name: calls.append(_name) or _real(*args))
    return calls


AGAIN = [
    # (what changed since LLaMA-Factory accepted the tiny Answer config, the recipe overrides then)
    pytest.param(lambda run, mp: None, [], False, id="nothing"),
    pytest.param(lambda run, mp: None, ["train.learning_rate=1e-3"], True, id="a-recipe-value"),
    pytest.param(lambda run, mp: mp.setattr(parser, "_version", lambda name: "9.9"), [], True, id="llamafactory-upgraded"),
    pytest.param(lambda run, mp: (run / checks.CHECKED).write_text("garbled"), [], False, id="the-stamp-garbled-the-machine-knows"),
    pytest.param(lambda run, mp: (run / checks.CHECKED).unlink(), [], False, id="the-stamp-gone-the-machine-knows"),
    pytest.param(lambda run, mp: [(run / checks.CHECKED).unlink(), *map(Path.unlink, cache_dir("accepted").iterdir())],
                 [], True, id="the-stamp-and-the-machines-cache-gone"),
]


@pytest.mark.parametrize("change, overrides, parsed", AGAIN)
def test_an_accepted_config_is_parsed_again_only_when_what_it_read_changed(
        project: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch, change, overrides: list[str],
        parsed: bool) -> None:
    [first] = check_roles([load_role("answer", "recipes/tiny-answer.yaml")])
    calls = _count_parses(monkeypatch)
    change(first.paths.run_dir, monkeypatch)
    check_roles([load_role("answer", "recipes/tiny-answer.yaml", overrides)])
    assert calls == (["_unknown_names", "_parsed"] if parsed else [])


def test_the_same_recipe_in_another_project_is_not_parsed_again(
        project: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A moved project, or another with the same recipe: the project folder is no part of the key."""
    [first] = check_roles([load_role("answer", "recipes/tiny-answer.yaml")])
    other = project / "elsewhere"
    shutil.copytree(project / "recipes", other / "recipes")
    monkeypatch.chdir(other)
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(other))
    calls = _count_parses(monkeypatch)
    [again] = check_roles([load_role("answer", "recipes/tiny-answer.yaml")])
    assert calls == [] and again.paths.run_dir == other / "runs/tiny-answer"
    assert (again.paths.run_dir / checks.CHECKED).read_text() == (first.paths.run_dir / checks.CHECKED).read_text()


def test_a_refused_config_is_never_remembered(project: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_parses(monkeypatch)
    for _ in range(2):
        with pytest.raises(UserError) as info:
            check_roles([load_role("answer", "recipes/tiny-answer.yaml", ["train.lora_rank=abc"])])
        assert "train.lora_rank" in info.value.lines[0]
    assert calls == ["_unknown_names", "_parsed"] * 2
    assert check_roles([load_role("answer", "recipes/tiny-answer.yaml")])  # and the good one is accepted after
