"""The tiny offline Qwen2 model: built for real, loaded with transformers and LLaMA-Factory."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.common.errors import UserError
from orchestrator.stages.tiny_model import REQUIRED_FILES, build_tiny_model

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def test_writes_a_small_complete_model(model_dir: Path) -> None:
    for name in REQUIRED_FILES:
        assert (model_dir / name).is_file(), name
    assert (model_dir / "model.safetensors").stat().st_size < 5_000_000
    assert [p.name for p in model_dir.parent.iterdir()] == ["model"]  # no temp dir left


@pytest.mark.parametrize(
    "text",
    [
        "答案是：A",
        "### 思考思路:\n1. 甲不是凶手，所以乙说了真话。\n### 可能的结果:\nB",
        "闭世界假设（close-world assumption）：未观测事实都为假。",
        "生僻字龘、emoji 🙂 and tabs\tand  spaces",
    ],
)
def test_tokenizer_round_trips(tokenizer, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_special_tokens_are_single_ids_like_qwen2(tokenizer, model_dir: Path) -> None:
    import json

    ids = [tokenizer.encode(token, add_special_tokens=False) for token in SPECIALS]
    n = len(tokenizer)
    assert ids == [[n - 3], [n - 2], [n - 1]]
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == (
        "<|im_end|>",
        "<|endoftext|>",
        None,
    )
    assert tokenizer.model_max_length == 4096
    config = json.loads((model_dir / "config.json").read_text())
    assert (config["eos_token_id"], config["pad_token_id"]) == (n - 1, n - 3)
    generation = json.loads((model_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [n - 1, n - 3]


def test_chat_template_is_qwen2_instructs(tokenizer) -> None:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    )


def test_llamafactory_qwen_template_fits(model_dir: Path) -> None:
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)  # LLaMA-Factory may patch it in place
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template="qwen"))
    messages = [{"role": "user", "content": "题目"}, {"role": "assistant", "content": "答案是：A"}]
    prompt, response = template.encode_oneturn(tokenizer, messages)
    assert tokenizer.decode(prompt).endswith(
        "<|im_start|>user\n题目<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(response) == "答案是：A<|im_end|>\n"
    assert template.get_stop_token_ids(tokenizer) == [tokenizer.eos_token_id]


def test_model_loads_and_gives_vocab_logits(model_dir: Path, tokenizer) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.model_type == "qwen2" and model.config.tie_word_embeddings
    ids = tokenizer("<|im_start|>user\n答案是：A<|im_end|>\n", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert model.config.vocab_size == len(tokenizer)


def test_second_call_is_a_no_op(model_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
    assert build_tiny_model(model_dir) == model_dir
    assert {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()} == before


def test_same_seed_same_model_other_seed_other_weights(model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again")
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert (again / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()
    first, second, third = _weights(model_dir), _weights(again), _weights(other)
    assert first.keys() == second.keys()
    assert all(first[k].equal(second[k]) for k in first)
    assert not all(first[k].equal(third[k]) for k in first)


def test_custom_corpus_and_an_existing_empty_dir(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    out = tmp_path / "custom"
    out.mkdir()
    build_tiny_model(out, corpus=["甲乙丙丁\n" * 50])
    custom = AutoTokenizer.from_pretrained(out)
    assert len(custom.encode("甲乙丙丁", add_special_tokens=False)) == 1
    assert custom.decode(custom.encode("答案是：A", add_special_tokens=False)) == "答案是：A"


def test_refuses_a_dir_holding_something_else(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a complete tiny model"):
        build_tiny_model(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_quantize_refuses_a_folder_that_holds_another_model(model_dir: Path, cli) -> None:
    code, out, err = cli("tiny-model", model_dir, "--quantize", "gptq")
    assert (code, out) == (2, "")
    assert err.splitlines()[0] == f"Error: {model_dir} exists but is not a complete GPTQ tiny model"
    code, _, err = cli("tiny-model", model_dir, "--quantize", "awq")
    assert code == 2 and "'awq' is not 'gptq'" in err
