"""A tiny Qwen2-architecture chat model, built offline, for smoke runs of the real tools on CPU.

`build_tiny_model(out_dir)` trains a byte-level BPE tokenizer on the project's own text and saves
it with a randomly initialised 2-layer Qwen2 (under 1 MB of safetensors) that LLaMA-Factory
treats like Qwen2-7B-Instruct with `template: qwen`. Seen on a 2-core CPU with llamafactory 0.9.5,
transformers 5.6, torch 2.14: build 0.4 s (plus 3 s importing torch and transformers), load
0.02 s; `llamafactory-cli train` (LoRA, 3 steps) 7 s; `export` (merge) 6.5 s; `api` answers
`/v1/models` 6 s after start, then a 64-token reply takes 0.1 s (the first one up to 2 s).

The api does not decode with this model's generation_config.json: LLaMA-Factory passes its own
settings (`max_new_tokens` 1024, sampling on), which win. Bound replies with the request's
`max_tokens` or `max_new_tokens` in the api YAML (random weights rarely emit `<|im_end|>`;
an unbounded reply runs all 1024 tokens, 1.3 s).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import SOURCE_ROOT
from orchestrator.core.data.competition import read_dataset
from orchestrator.core.llamafactory.gptq import gptq_export

SAMPLE_DIR = SOURCE_ROOT / "datasets" / "sample"
PROMPTS_DIR = SOURCE_ROOT / "templates" / "prompts"

VOCAB_SIZE = 3000  # BPE merges stop earlier when the text runs out
EMBEDDING_STD = 0.5  # of the tied input/output embedding, see build_tiny_model
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)

# Qwen2-7B-Instruct's chat template, verbatim (Jinja string escapes, hence a raw string).
CHAT_TEMPLATE = (
    r"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    r"{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    r"{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    r"{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Always trained on, so the pipeline's fixed phrases and common characters get their own merges.
FIXED_TEXT = (
    "答案是：A 答案是：B 答案是：C 答案是：D 答案是：E 答案是：F 答案是：G 答案是:X 例如：答案是：A",
    "### 题目:\n### 问题:\n### 思考思路:\n1. 2. 3. 4. 5.\n### 可能的结果:\n选择题 1:\n选择题 2:\n",
    "A. B. C. D. E. F. G. 正确 错误 是 否 真 假 所有 没有 如果 那么 因为 所以 并且 或者 不是",
    "You are a helpful assistant. You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    "system user assistant The quick brown fox jumps over the lazy dog. 0123456789 3.14 -42 100%",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "，。：；！？、（）《》【】「」“”‘’…—·～",
    (
        "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事"
        "其里所去行过家十用发天如然作方成者多日都三小二无同么经法当起与好看学进种将还分此心前面又定见只主"
        "没公从知使点开长把些现山样方高本已老手回第外最新给被由最问题目选项推理逻辑关系条件结论假设事实观测"
        "每个一些两位哪谁请根据分析可能结果思考路判断成立矛盾必然至少至多只有除了之间相邻左右前后红黄蓝绿"
    ),
)


def build_tiny_model(out_dir: Path, corpus: Iterable[str] | None = None, seed: int = 0, width: int = 64) -> Path:
    """Build the tiny model and tokenizer into `out_dir` (deterministic per corpus and seed).

    `corpus` defaults to the shipped sample data and prompt templates; a fixed set of phrases and
    characters is always added. `width`: the hidden size (the MLP is twice as wide). Returns at once if `out_dir` already holds a complete model.
    """
    out_dir = Path(out_dir)
    if _is_complete(out_dir):
        return out_dir
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(
            f"{out_dir} exists but is not a complete tiny model",
            "remove it or choose another directory",
        )
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out_dir.parent}: {e.strerror}") from None

    texts = [*(default_corpus() if corpus is None else corpus), *FIXED_TEXT]
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the model is an ordinary directory
        _build(tmp, texts, seed, width)
        try:
            os.replace(tmp, out_dir)  # replaces an empty directory; fails on a non-empty one
        except OSError:
            if not _is_complete(out_dir):  # a concurrent build that finished first is fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


QUANTIZE_METHODS = ("gptq",)
# GPTQ groups of 128 weights: every layer of a tiny model this wide holds whole groups, which
# gptqmodel's CPU kernel (aten int4 matmul) needs ("expect K to be divisible by qGroupSize").
QUANTIZED_WIDTH = 128
# vLLM's CPU attention takes head sizes 32, 64, 80, 96, 112, 128...: 2 heads of 32 at width 64 (1 KV
# head: the same weight shapes as 4 heads of 16 with 2 KV heads), 4 of 32 at 128.
HEAD_DIM = 32
TINY_GPTQ_SAMPLES, TINY_GPTQ_MAXLEN = 8, 256  # a calibrated 4-bit export in under a minute of CPU


def build_quantized_tiny_model(out_dir: Path, method: str = "gptq", seed: int = 0) -> Path:
    """The tiny model, 128 wide, quantized for real: a 4-bit GPTQ checkpoint (packed qweight
    tensors, group size 128) calibrated on the sample's Answer prompts, by `llamafactory-cli
    export`. Returns at once if `out_dir` already holds one."""
    out_dir = Path(out_dir)
    if method not in QUANTIZE_METHODS:
        raise UserError(f"--quantize {method}: not a method; one of {', '.join(QUANTIZE_METHODS)}")
    if _is_complete(out_dir) and _quant_method(out_dir) == method:
        return out_dir
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir} exists but is not a complete {method.upper()} tiny model",
                        "remove it or choose another directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        source = build_tiny_model(work / "full", seed=seed, width=QUANTIZED_WIDTH)
        quantized = work / "quantized"
        questions = read_dataset(SAMPLE_DIR / "train.jsonl").questions
        gptq_export(source, quantized, questions=questions, template="qwen", stage=f"tiny-model {method}",
                    work_dir=work, export_size=1, nsamples=TINY_GPTQ_SAMPLES, maxlen=TINY_GPTQ_MAXLEN)
        quantized.chmod(0o755)
        try:
            os.replace(quantized, out_dir)
        except OSError:
            if not (_is_complete(out_dir) and _quant_method(out_dir) == method):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def _quant_method(path: Path) -> str | None:
    try:
        quantization = json.loads((path / "config.json").read_text(encoding="utf-8")).get("quantization_config")
    except (OSError, ValueError, AttributeError):
        return None
    return quantization.get("quant_method") if isinstance(quantization, dict) else None


def default_corpus() -> Iterator[str]:
    """The strings of every sample .jsonl line (or the raw line), then the prompt templates."""
    for path in sorted(SAMPLE_DIR.glob("*.jsonl")):
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text") from None
        for line in lines:
            try:
                yield from _strings(json.loads(line))
            except json.JSONDecodeError:
                yield line
    for path in sorted(PROMPTS_DIR.glob("*.j2")):
        yield path.read_text(encoding="utf-8")


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _is_complete(path: Path) -> bool:
    return all((path / name).is_file() for name in REQUIRED_FILES)


def _build(out: Path, texts: list[str], seed: int, width: int = 64) -> None:
    import torch
    from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import (
        GenerationConfig,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen2Tokenizer,
    )
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # Train with Qwen2's own pipeline: transformers 5 rebuilds it from vocab and merges on load.
    bpe = Tokenizer(BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = BpeTrainer(
        vocab_size=VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: nothing is unknown
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    trained = json.loads(bpe.to_str())["model"]

    # Special tokens follow the BPE vocabulary in Qwen2's order: endoftext, im_start, im_end.
    base = len(trained["vocab"])
    specials = [ENDOFTEXT, IM_START, IM_END]
    tokenizer = Qwen2Tokenizer(
        vocab=trained["vocab"],
        merges=[tuple(pair) for pair in trained["merges"]],
        added_tokens_decoder={
            base + i: AddedToken(token, special=True, normalized=False)
            for i, token in enumerate(specials)
        },
        extra_special_tokens=[IM_START, IM_END],
        bos_token=None,
        unk_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )
    endoftext, im_end = base, base + 2  # no bos: Qwen2's tokenizer adds none
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=width // HEAD_DIM,
        num_key_value_heads=max(1, width // HEAD_DIM // 2),
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=im_end,
        pad_token_id=endoftext,
    )
    with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's RNG
        torch.manual_seed(seed)
        lm = Qwen2ForCausalLM(config)
        # The output layer is the (tied) embedding: at the usual std 0.02 the largest logit a
        # 64-wide hidden state can reach is about 1.3, too flat for LoRA to ever peak on the
        # training targets. At std 0.5 a few LoRA steps teach the reply format.
        with torch.no_grad():
            lm.model.embed_tokens.weight.mul_(EMBEDDING_STD / config.initializer_range)
    # Short greedy replies for plain `generate()`; LLaMA-Factory's api passes its own settings.
    lm.generation_config = GenerationConfig(
        pad_token_id=endoftext,
        eos_token_id=[im_end, endoftext],
        do_sample=False,
        max_new_tokens=64,
    )
    lm.save_pretrained(out)
    tokenizer.save_pretrained(out)
