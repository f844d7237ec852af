"""The serving-memory estimate on configs of real shapes (their config.json values, written out)."""

from __future__ import annotations

import pytest
from helpers import QWEN2_72B_AWQ

from orchestrator.core.serving.memory import ConfigError, budget_problem, model_shape, peak_gb, server_estimate

QWEN2_7B = {  # Qwen/Qwen2-7B-Instruct
    "architectures": ["Qwen2ForCausalLM"], "hidden_size": 3584, "intermediate_size": 18944,
    "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4, "vocab_size": 152064,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
QWEN25_32B_GPTQ = {  # Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4
    "architectures": ["Qwen2ForCausalLM"], "hidden_size": 5120, "intermediate_size": 27648,
    "num_attention_heads": 40, "num_hidden_layers": 64, "num_key_value_heads": 8, "vocab_size": 152064,
    "tie_word_embeddings": False, "torch_dtype": "float16",
    "quantization_config": {"bits": 4, "group_size": 128, "desc_act": False, "quant_method": "gptq", "sym": True},
}
QWEN2_05B = {  # Qwen/Qwen2-0.5B-Instruct: tied embeddings
    "hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14, "num_hidden_layers": 24,
    "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
}


@pytest.mark.parametrize(("config", "params_b", "weights_gb", "fits_32"), [
    (QWEN2_7B, (7.5, 7.7), (14.8, 15.6), True),
    (QWEN25_32B_GPTQ, (32.5, 33.0), (18.6, 20.0), True),
    (QWEN2_72B_AWQ, (72.5, 73.0), (40.0, 42.5), False),
    (QWEN2_05B, (0.48, 0.51), (0.9, 1.1), True),
])
def test_weights_and_the_32_gb_budget(config, params_b, weights_gb, fits_32):
    shape = model_shape(config)
    assert params_b[0] < shape.params / 1e9 < params_b[1]
    server = server_estimate("m", config, max_len=2048, sequences=8)
    assert weights_gb[0] < server.weights_gb < weights_gb[1]
    problem = budget_problem([server], together=False, budget_gb=32)
    assert (problem is None) == fits_32
    if problem:
        assert f"{server.total_gb:.1f} GB" in problem and "package.gpu_memory_gb 32" in problem


@pytest.mark.parametrize(("config", "per_token_kb"), [
    (QWEN2_7B, 57.344),  # 2 x 28 layers x 4 KV heads x 128 x 2 bytes
    (QWEN25_32B_GPTQ, 262.144),  # 2 x 64 x 8 x 128 x 2
    (QWEN2_72B_AWQ, 327.68),  # 2 x 80 x 8 x 128 x 2
])
def test_kv_cache_grows_with_length_and_requests_in_flight(config, per_token_kb):
    assert model_shape(config).kv_bytes_per_token() / 1e3 == pytest.approx(per_token_kb)
    one = server_estimate("m", config, max_len=1024, sequences=1)
    many = server_estimate("m", config, max_len=4096, sequences=8)
    assert many.kv_cache_gb == pytest.approx(32 * one.kv_cache_gb)
    assert many.kv_cache_gb == pytest.approx(per_token_kb * 1e3 * 4096 * 8 / 1e9)


def test_adapters_count_and_staged_servers_peak_at_the_largest():
    a = server_estimate("answer", QWEN2_7B, max_len=2048, sequences=8, adapter_bytes=[40_000_000, 40_000_000])
    b = server_estimate("evaluate", QWEN2_7B, max_len=2048, sequences=8)
    assert a.adapters_gb == pytest.approx(0.08) and a.total_gb == pytest.approx(b.total_gb + 0.08)
    assert peak_gb([a, b], together=False) == a.total_gb
    assert peak_gb([a, b], together=True) == pytest.approx(a.total_gb + b.total_gb)
    assert budget_problem([a, b], together=False, budget_gb=24) is None
    refused = budget_problem([a, b], together=True, budget_gb=24)
    assert refused and "all up at once" in refused and refused.count("weights") == 2


@pytest.mark.parametrize(("config", "message"), [
    ({"hidden_size": 8}, "has no num_hidden_layers, num_attention_heads, vocab_size"),
    ({**QWEN2_7B, "num_hidden_layers": "28"}, "num_hidden_layers is '28'"),
    ({**QWEN2_7B, "torch_dtype": "int3"}, "torch_dtype is 'int3'"),
    ({**QWEN2_7B, "quantization_config": {"quant_method": "gptq"}}, "quantization_config.bits is None"),
])
def test_unreadable_configs_name_the_key(config, message):
    with pytest.raises(ConfigError, match=message):
        model_shape(config)


def test_bitsandbytes_4bit_and_float32():
    nf4 = model_shape({**QWEN2_7B, "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}})
    full = model_shape({**QWEN2_7B, "torch_dtype": "float32"})
    half = model_shape(QWEN2_7B)
    assert 5.0e9 < nf4.weight_bytes() < 6.0e9  # 4-bit linear layers, 16-bit embeddings (2.2 GB of it)
    assert full.weight_bytes() == pytest.approx(2 * half.weight_bytes())


def test_vllm_servers_take_their_share_of_the_card():
    """Two vLLM servers at gpu_memory_utilization 0.9 cannot both start on one card, however small
    their models; one after another they fit. A model larger than its share is refused alone."""
    small = [server_estimate(n, QWEN2_05B, max_len=2048, sequences=4, gpu_util=0.9) for n in ("answer", "evaluate")]
    assert small[0].total_gb < 5 and small[0].taken_gb(32) == pytest.approx(28.8)
    assert peak_gb(small, together=True, card_gb=32) == pytest.approx(57.6)
    refused = budget_problem(small, together=True, budget_gb=32)
    assert refused and "57.6 GB" in refused and "gpu_memory_utilization 0.9" in refused
    assert budget_problem(small, together=False, budget_gb=32) is None
    assert budget_problem([server_estimate("a", QWEN2_05B, max_len=2048, sequences=4)] * 2, together=True,
                          budget_gb=32) is None  # the same models on servers that take what they use
    big = server_estimate("answer", QWEN2_7B, max_len=4096, sequences=8, gpu_util=0.5)
    refused = budget_problem([big], together=False, budget_gb=32)
    assert refused and refused.startswith("answer needs about") and "(16.0 GB)" in refused


def test_samples_per_request_fill_the_kv_cache():
    one = server_estimate("m", QWEN2_7B, max_len=2048, sequences=8)
    votes = server_estimate("m", QWEN2_7B, max_len=2048, sequences=8, samples=5)
    assert votes.kv_cache_gb == pytest.approx(5 * one.kv_cache_gb)
    assert votes.weights_gb == one.weights_gb
