"""The GPU memory that serving a model takes, estimated from its config.json before anything is
copied or started: weights + KV cache + LoRA adapters + a fixed runtime overhead.

Weights: the parameter count of a decoder (embeddings, attention with grouped KV heads, gated
MLP) at the model's dtype, or at its quantization bits (GPTQ/AWQ, with a scale and zero per
group) for the linear layers, the embeddings staying at the config's dtype. KV cache: keys and
values of every layer for `max_len` tokens of each of `sequences` requests in flight, each asking `samples`
replies (`n`: every sample is a sequence of its own in vLLM's KV cache). A vLLM server takes
`gpu_memory_utilization` of the card when it starts, whatever the model needs, and must fit its
model in that share. GB here are 10^9 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GB = 1e9
DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "fp16": 2, "bf16": 2, "auto": 2}
RUNTIME_OVERHEAD_GB = 1.0  # CUDA context, activations and sampling buffers of one server
CONFIG_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")


class ConfigError(ValueError):
    """A config.json this estimate cannot read: the message names the key."""


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool  # the output head shares the input embedding
    weight_bits: float  # bits per linear-layer weight (16 for bf16, about 4.16 for 4-bit GPTQ/AWQ)
    kv_bytes: int  # bytes per cached key or value element (the activation dtype)
    quantization: str | None  # gptq, awq, bitsandbytes, ... or None
    dtype_bytes: int = 2  # of the weights left unquantized (embeddings), as config.json's dtype says

    @property
    def linear_params(self) -> int:
        """Parameters of the quantizable linear layers: attention and MLP of every layer."""
        kv = self.kv_heads * self.head_dim
        q = self.heads * self.head_dim
        attention = self.hidden * q + 2 * self.hidden * kv + q * self.hidden
        mlp = 3 * self.hidden * self.intermediate  # gate, up, down
        return self.layers * (attention + mlp)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def params(self) -> int:
        return self.linear_params + self.embedding_params

    def weight_bytes(self) -> float:
        return self.linear_params * self.weight_bits / 8 + self.embedding_params * self.dtype_bytes

    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes


def _int(config: Mapping[str, Any], key: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key} is {value!r}, not a positive whole number")
    return value


def model_shape(config: Mapping[str, Any]) -> ModelShape:
    """The shape of a decoder from its Hugging Face config.json (Qwen2, Llama, Mistral names)."""
    config = {**config.get("text_config", {}), **config} if isinstance(config.get("text_config"), dict) else config
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ConfigError(f"has no {', '.join(missing)}")
    layers, hidden, heads, vocab = (_int(config, k) for k in CONFIG_KEYS)
    kv_heads = _int(config, "num_key_value_heads") if config.get("num_key_value_heads") else heads
    head_dim = _int(config, "head_dim") if config.get("head_dim") else hidden // heads
    intermediate = _int(config, "intermediate_size") if config.get("intermediate_size") else 4 * hidden
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16").removeprefix("torch.")
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"torch_dtype is {dtype!r}; known: {', '.join(sorted(DTYPE_BYTES))}")
    kv_bytes = DTYPE_BYTES[dtype]
    quant = config.get("quantization_config")
    method: str | None = None
    bits: float = 8 * kv_bytes
    if isinstance(quant, Mapping):
        method = str(quant.get("quant_method") or "unknown")
        if quant.get("load_in_4bit"):
            raw_bits: Any = 4
        elif quant.get("load_in_8bit"):
            raw_bits = 8
        else:
            raw_bits = quant.get("bits", quant.get("w_bit"))
        if isinstance(raw_bits, bool) or not isinstance(raw_bits, int) or not 1 <= raw_bits <= 16:
            raise ConfigError(f"quantization_config.bits is {raw_bits!r}, not a number of bits")
        group = quant.get("group_size", quant.get("q_group_size", 128))
        group = group if isinstance(group, int) and group > 0 else 128
        bits = raw_bits + (16 + raw_bits) / group  # a 16-bit scale and a packed zero per group
        kv_bytes = 2  # quantized kernels compute in float16
    return ModelShape(layers, hidden, heads, kv_heads, head_dim, intermediate, vocab,
                      bool(config.get("tie_word_embeddings", False)), bits, kv_bytes, method, DTYPE_BYTES[dtype])


@dataclass(frozen=True)
class ServerEstimate:
    """The GPU memory one server takes, in GB."""

    name: str
    weights_gb: float
    kv_cache_gb: float
    adapters_gb: float
    overhead_gb: float = RUNTIME_OVERHEAD_GB
    gpu_util: float | None = None  # a vLLM server: the share of the card it takes (gpu_memory_utilization)

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.kv_cache_gb + self.adapters_gb + self.overhead_gb

    def taken_gb(self, card_gb: float) -> float:
        """What the server holds on a card of `card_gb`: vLLM its whole share, others what they use."""
        return self.gpu_util * card_gb if self.gpu_util is not None else self.total_gb

    def describe(self) -> str:
        line = (f"{self.name}: {self.total_gb:.1f} GB = weights {self.weights_gb:.1f} + KV cache "
                f"{self.kv_cache_gb:.1f} + adapters {self.adapters_gb:.1f} + runtime {self.overhead_gb:.1f}")
        return line + (f" (vLLM takes gpu_memory_utilization {self.gpu_util:g} of the card)" if self.gpu_util else "")


def server_estimate(
    name: str, config: Mapping[str, Any], *, max_len: int, sequences: int, adapter_bytes: Sequence[int] = (),
    samples: int = 1, gpu_util: float | None = None,
) -> ServerEstimate:
    """One server of the model `config`: `sequences` requests in flight of up to `max_len` tokens,
    each asking `samples` replies, with the given LoRA adapters loaded beside it; `gpu_util`: a
    vLLM server's gpu_memory_utilization."""
    shape = model_shape(config)
    kv = shape.kv_bytes_per_token() * max_len * sequences * samples
    return ServerEstimate(name, shape.weight_bytes() / GB, kv / GB, sum(adapter_bytes) / GB, gpu_util=gpu_util)


def peak_gb(servers: Sequence[ServerEstimate], *, together: bool, card_gb: float | None = None) -> float:
    """The most GPU memory in use at once: the servers one after another (staged), or all up; on
    a card of `card_gb`, a vLLM server counts its whole share of it."""
    totals = [s.total_gb if card_gb is None else s.taken_gb(card_gb) for s in servers]
    return (sum(totals) if together else max(totals)) if totals else 0.0


def budget_problem(servers: Sequence[ServerEstimate], *, together: bool, budget_gb: float) -> str | None:
    """None when the servers fit on a card of `budget_gb`; else why not, with the numbers."""
    for s in servers:
        if s.gpu_util is not None and s.total_gb > s.gpu_util * budget_gb:
            return (f"{s.name} needs about {s.total_gb:.1f} GB, more than its vLLM share gpu_memory_utilization "
                    f"{s.gpu_util:g} of package.gpu_memory_gb {budget_gb:g} ({s.gpu_util * budget_gb:.1f} GB): "
                    + s.describe())
    peak = peak_gb(servers, together=together, card_gb=budget_gb)
    if peak <= budget_gb:
        return None
    how = "all up at once" if together else "the largest of them (they run one after another)"
    return (f"serving needs about {peak:.1f} GB of GPU memory, {how}, more than package.gpu_memory_gb "
            f"{budget_gb:g}: " + "; ".join(s.describe() for s in servers))
