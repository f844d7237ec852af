"""`orchestrator recipe import`: LLaMA-Factory v0.9.5's own example configs (their keys, from
examples/ at tag v0.9.5) imported onto the shipped recipes and rendered knob for knob; a
LlamaBoard save; bad input refused in one line each, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.core.llamafactory.imported import HOUSEKEEPING, lf_defaults, to_recipe
from orchestrator.core.llamafactory.pasted import same_value
from orchestrator.core.recipes.loading import load_role

_COMMON = """\
trust_remote_code: true
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
cutoff_len: 2048
max_samples: 1000
preprocessing_num_workers: 16
dataloader_num_workers: 4
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
"""

# examples/<file> of LLaMA-Factory v0.9.5: what each adds to the keys they share
EXAMPLES = {
    "train_lora/qwen3_lora_sft.yaml": """\
model_name_or_path: Qwen/Qwen3-4B-Instruct-2507
stage: sft
dataset: identity,alpaca_en_demo
template: qwen3_nothink
output_dir: saves/qwen3-4b/lora/sft
learning_rate: 1.0e-4
resume_from_checkpoint: null
""",
    "train_lora/qwen3_lora_dpo.yaml": """\
model_name_or_path: Qwen/Qwen3-4B-Instruct-2507
stage: dpo
pref_beta: 0.1
pref_loss: sigmoid
dataset: dpo_en_demo
template: qwen3_nothink
output_dir: saves/qwen3-4b/lora/dpo
learning_rate: 5.0e-6
""",
    "extras/loraplus/llama3_lora_sft.yaml": """\
model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct
stage: sft
loraplus_lr_ratio: 16.0
dataset: identity,alpaca_en_demo
template: llama3
overwrite_cache: true
output_dir: saves/llama3-8b/lora/sft
learning_rate: 1.0e-4
""",
    "extras/pissa/llama3_lora_sft.yaml": """\
model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct
stage: sft
pissa_init: true
pissa_iter: 16
pissa_convert: true
dataset: identity,alpaca_en_demo
template: llama3
output_dir: saves/llama3-8b/lora/sft
learning_rate: 1.0e-4
""",
    "train_qlora/qwen3_lora_sft_otfq.yaml": """\
model_name_or_path: Qwen/Qwen3-4B-Instruct-2507
quantization_bit: 4
quantization_method: bnb
stage: sft
dataset: identity,alpaca_en_demo
template: qwen3_nothink
output_dir: saves/qwen3-4b/lora/sft
learning_rate: 1.0e-4
""",
}
# keys the recipe keeps elsewhere or leaves out on purpose (docs/recipes.md's table)
OWNED = {"model_name_or_path", "dataset", "template", "output_dir", "dataset_dir", "overwrite_output_dir",
         "trust_remote_code", "resume_from_checkpoint", "deepspeed"}


def write_example(project: Path, name: str) -> Path:
    path = project / "lf" / Path(name).name
    path.parent.mkdir(exist_ok=True)
    path.write_text(_COMMON + EXAMPLES[name], encoding="utf-8")
    return path


@pytest.mark.parametrize("base", ["recipes/answer.yaml", "recipes/tiny-answer.yaml"])
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_an_example_renders_knob_for_knob(project: Path, cli, name: str, base: str) -> None:
    source = write_example(project, name)
    example = yaml.safe_load(source.read_text(encoding="utf-8"))
    code, out, err = cli("recipe", "import", source, "--role", "answer", "--recipe", base, "--out", "recipes/lf-answer.yaml")
    assert code == 0, err
    assert out == f"wrote {project / 'recipes' / 'lf-answer.yaml'} from an LLaMA-Factory train YAML; runs/lf-answer/ is its run folder\n"
    loaded = load_role("answer", "recipes/lf-answer.yaml")
    assert loaded.recipe.model.source == example["model_name_or_path"] and loaded.recipe.model.path is None
    if example.get("stage") == "dpo":  # a preference recipe on the base's model, its own pairs
        assert (loaded.recipe.preference.sft_recipe, loaded.recipe.dataset.name) == (base, "pref_lf_answer")
    assert loaded.recipe.model.template == example["template"]
    rendered = yaml.safe_load((project / "runs" / "lf-answer" / "train.yaml").read_text(encoding="utf-8"))
    for key, value in example.items():  # every knob the example sets, as it set it
        if key not in OWNED and value is not None and key not in HOUSEKEEPING:
            assert same_value(key, rendered.get(key), value), (key, rendered.get(key), value)
    defaults = lf_defaults()
    for key, value in rendered.items():  # and nothing more, but where a recipe keeps its own
        if key not in example and key not in OWNED | HOUSEKEEPING | {"eval_dataset", "eval_strategy", "eval_steps",
                                                                      "per_device_eval_batch_size"}:
            assert same_value(key, value, defaults.get(key)), (key, value)
    # the imported recipe is short: what differs from its base, never what the base says already
    written = yaml.safe_load((project / "recipes" / "lf-answer.yaml").read_text(encoding="utf-8"))
    base_train = load_role("answer", base).recipe.train
    assert not [k for k, v in written.get("train", {}).items() if v is not None and base_train.get(k) == v]
    # one line each for the keys the recipe owns
    assert f"{source.relative_to(project)}: dataset {example['dataset']} -> the role's own train_answer_instruct" in err
    assert "overwrite_output_dir left out" in err


def test_deepspeed_maps_to_distributed(project: Path) -> None:
    """qwen3_lora_sft_ds3.yaml's config by LLaMA-Factory's name (its file is not here) or its content."""
    base = load_role("answer")
    found = to_recipe({"deepspeed": "examples/deepspeed/ds_z3_config.json"}, "ds3.yaml", base, project)
    assert (found.values["distributed"], found.errors) == ({"deepspeed": 3, "offload": False}, [])
    (project / "mine.json").write_text('{"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}')
    found = to_recipe({"deepspeed": "mine.json"}, "ds.yaml", base, project)
    assert found.values["distributed"] == {"deepspeed": 2, "offload": True}
    found = to_recipe({"deepspeed": "examples/deepspeed/ds_z0_config.json"}, "ds0.yaml", base, project)
    assert found.errors == ["ds0.yaml: deepspeed examples/deepspeed/ds_z0_config.json: not a ZeRO-2 or ZeRO-3 "
                            "config a recipe renders; set distributed.deepspeed (2 or 3) and distributed.offload instead"]


def test_epochs_over_an_inherited_max_steps_are_kept(project: Path, cli) -> None:
    """The file trains by epochs: the tiny base's max_steps is removed, not left to win."""
    source = write_example(project, "train_lora/qwen3_lora_sft.yaml")
    code, out, err = cli("recipe", "import", source, "--role", "answer", "--recipe", "recipes/tiny-answer.yaml")
    assert code == 0, err
    written = yaml.safe_load((project / "recipes" / "qwen3_lora_sft-answer.yaml").read_text(encoding="utf-8"))
    assert written["train"]["max_steps"] is None and written["name"] == "qwen3_lora_sft-answer"
    assert "leaves out lora_alpha, lora_dropout, max_steps: removed from the recipe (null)" in err


@pytest.mark.parametrize(
    "text, expected",
    [
        ("- stage: sft\n- lora_rank: 8\n", "Error: lf/bad.yaml: a YAML list, not an LLaMA-Factory train config or a "
         "LlamaBoard save (a mapping of argument names to values)"),
        ("", "Error: lf/bad.yaml: an empty file, not an LLaMA-Factory train config"),
        ("stage: sft\nlora_rnak: 8\n", "Error: lf/bad.yaml: lora_rnak is not a LLaMA-Factory train argument "
         "(did you mean lora_rank?)"),
        ("stage: sft\nfinetuning_type: full\n", "Error: lf/bad.yaml: finetuning_type full: a recipe trains a LoRA "
         "adapter (merge and serving read one); use finetuning_type: lora"),
        ("adapter_name_or_path: saves/x\n", "Error: lf/bad.yaml: adapter_name_or_path saves/x: a recipe trains a new "
         "adapter on its base"),
        ("stage: sft\ndo_train: false\n", "Error: lf/bad.yaml: do_train False: a recipe trains (`orchestrator "
         "train`); remove do_train or set it true"),
        ("lora_rank: [8\n", "Error: lf/bad.yaml:2: not valid YAML (expected ',' or ']'"),
        ("lora_rank: abc\n", "Error: recipes/bad-answer.yaml: train.lora_rank: LLaMA-Factory says: argument "
         "--lora_rank/--lora-rank: invalid int value: 'abc'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(project: Path, cli, text: str, expected: str) -> None:
    (project / "lf").mkdir()
    (project / "lf" / "bad.yaml").write_text(text, encoding="utf-8")
    code, out, err = cli("recipe", "import", "lf/bad.yaml", "--role", "answer")
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and err.startswith(expected), err
    assert not (project / "recipes" / "bad-answer.yaml").exists()


def test_the_files_own_dataset_names_are_said_as_what_replaces_them(project: Path, cli) -> None:
    """A pasted config names its own sets: dataset becomes the role's training set, eval_dataset
    the problems held out of it (not the training set)."""
    (project / "lf").mkdir()
    (project / "lf" / "mine.yaml").write_text("stage: sft\ndataset: my_train,my_extra\neval_dataset: my_eval\n",
                                              encoding="utf-8")
    code, _, err = cli("recipe", "import", "lf/mine.yaml", "--role", "answer")
    assert code == 0, err
    assert "lf/mine.yaml: dataset my_train,my_extra -> the role's own train_answer_instruct (built by" in err
    assert ("lf/mine.yaml: eval_dataset my_eval -> the role's own val_answer_instruct: whole problems held out of "
            "training by dataset.val_size") in err


def test_an_existing_recipe_is_not_replaced(project: Path, cli) -> None:
    source = write_example(project, "train_lora/qwen3_lora_sft.yaml")
    assert cli("recipe", "import", source, "--role", "answer", "--out", "recipes/x-answer.yaml")[0] == 0
    code, out, err = cli("recipe", "import", source, "--role", "answer", "--out", "recipes/x-answer.yaml")
    assert (code, err) == (2, "Error: recipes/x-answer.yaml exists: name another with --out FILE, or --force to replace it\n")
    code, out, err = cli("recipe", "import", source, "--role", "answer", "--out", "recipes/answer.yaml", "--force")
    assert (code, err) == (2, "Error: --out recipes/answer.yaml is the base recipe itself: name a new file\n")
