"""vLLM without starting it: where its environment is found, the flags a recipe gives it, what
`check` refuses before it starts (no vLLM, a head size its CPU backend lacks, an adapter that does
not fit its base), and the reason a failing server's log gives. The real engine: tests/e2e/test_vllm_engine.py."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml

from orchestrator.core.common.errors import UserError
from orchestrator.core.recipes.loading import load_role
from orchestrator.core.serving import vllm
from orchestrator.core.serving.servers import adapter_problem, first_error

# (log lines after the server's `$ command` line, the reason found)
LOGS = [
    pytest.param(["INFO start", "(EngineCore pid=12) Traceback (most recent call last):", '  File "x.py", line 1',
                  "(EngineCore pid=12) RuntimeError: Unsupported CPU attention configuration: head_dim=16",
                  "RuntimeError: Engine core initialization failed."],
                 "RuntimeError: Unsupported CPU attention configuration: head_dim=16", id="vllm-engine-first"),
    pytest.param(["ValueError: Available memory on node 0 (1.2 GiB) is less than desired CPU memory utilization"],
                 "ValueError: Available memory on node 0 (1.2 GiB) is less than desired CPU memory utilization",
                 id="kv-cache"),
    pytest.param(["UserWarning: something: odd", "torch.OutOfMemoryError: CUDA out of memory. Tried"],
                 "torch.OutOfMemoryError: CUDA out of memory. Tried", id="warnings-skipped-dotted-name"),
    pytest.param(["(APIServer pid=9) WARNING 12-07 14:54:28 [system_utils.py:255] Found ulimit of 20000 ... like "
                  "`OSError: [Errno 24] Too many open files`.", "(APIServer pid=9) INFO 12-07 x: ValueError: noted",
                  "(EngineCore pid=12) RuntimeError: Unsupported CPU attention configuration: head_dim=16"],
                 "RuntimeError: Unsupported CPU attention configuration: head_dim=16", id="warnings-naming-errors"),
    pytest.param(["INFO all fine", "INFO: Shutting down"], None, id="no-error"),
]


@pytest.mark.parametrize("lines, reason", LOGS)
def test_first_error_is_the_engines_own_reason(tmp_path: Path, lines: list[str], reason: str | None) -> None:
    log = tmp_path / "serve.log"
    earlier = ["$ python -m vllm ...", "KeyError: from an earlier start"]
    log.write_text("\n".join([*earlier, "$ python -m vllm.entrypoints.openai.api_server", *lines]) + "\n")
    assert first_error(log) == reason


# (config.json keys, head size, a problem on CPU)
CONFIGS = [
    ({"hidden_size": 64, "num_attention_heads": 4}, 16, True),
    ({"hidden_size": 64, "num_attention_heads": 2}, 32, False),
    ({"hidden_size": 3584, "num_attention_heads": 28}, 128, False),
    ({"hidden_size": 64, "num_attention_heads": 4, "head_dim": 64}, 64, False),
    ({"text_config": {"hidden_size": 96, "num_attention_heads": 2}}, 48, True),
]


@pytest.mark.parametrize("config, size, refused", CONFIGS)
def test_head_sizes_vllms_cpu_backend_cannot_run_are_refused(tmp_path: Path, monkeypatch, config, size, refused) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert vllm.head_dim(config) == size
    problem = vllm.cpu_problem(tmp_path)
    assert (problem is not None) == refused
    if refused:
        assert f"attention heads of size {size}" in problem and "serve.infer_backend huggingface" in problem
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # a GPU runs any
    assert vllm.cpu_problem(tmp_path) is None


# (train: keys, serve.args, --dtype)
DTYPES = [({}, {}, "float32"), ({"bf16": True}, {}, "bfloat16"), ({"pure_bf16": True}, {}, "bfloat16"),
          ({"fp16": True}, {}, "float16"), ({"bf16": True}, {"infer_dtype": "float16"}, "float16"),
          ({"bf16": True}, {"infer_dtype": "auto"}, "bfloat16")]


@pytest.mark.parametrize("train, args, dtype", DTYPES)
def test_dtype_follows_the_training_precision(project: Path, train, args, dtype) -> None:
    path = project / "recipes" / "v.yaml"
    path.write_text(yaml.safe_dump({"extends": "answer.yaml", "train": {"bf16": None, **train},
                                    "serve": {"infer_backend": "vllm", "args": args}}))
    assert vllm.dtype(load_role("answer", path).recipe) == dtype


def test_vllm_is_found_by_the_variable_else_one_error_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(vllm.PYTHON_ENV, str(tmp_path / "nowhere" / "python"))
    with pytest.raises(UserError) as e:
        vllm.python()
    assert e.value.lines == [f"{vllm.PYTHON_ENV}={tmp_path}/nowhere/python: no such python; point it at the python "
                             "of an environment that has vllm, or unset it and run `make setup-vllm`"]
    venv = tmp_path / "env"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    monkeypatch.setenv(vllm.PYTHON_ENV, str(venv))  # a virtualenv's folder names its python
    assert vllm.python() == venv / "bin" / "python"


def test_kv_cache_space_is_ours_unless_the_user_set_it(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv(vllm.KV_CACHE_ENV, raising=False)
    assert vllm.environment(None)[vllm.KV_CACHE_ENV] == "1"
    monkeypatch.setenv(vllm.KV_CACHE_ENV, "6")
    assert vllm.KV_CACHE_ENV not in vllm.environment(None)  # the caller's 6 reaches the server
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.delenv(vllm.KV_CACHE_ENV)
    assert vllm.KV_CACHE_ENV not in vllm.environment("sk") and vllm.environment("sk")["VLLM_API_KEY"] == "sk"


def _adapter(folder: Path, base_name: str, shapes: dict[str, list[int]]) -> None:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "base_model_name_or_path": f"/x/{base_name}"}))
    header = json.dumps({k: {"dtype": "F32", "shape": v, "data_offsets": [0, 0]} for k, v in shapes.items()}).encode()
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)


FITS = "base.model.model.layers.0.self_attn.{}.lora_{}.weight"
# (the adapter's base name, its tensors' shapes, what the problem says; None: it fits)
ADAPTERS = [
    pytest.param("tiny-qwen2", {FITS.format("q_proj", "A"): [4, 64], FITS.format("q_proj", "B"): [64, 4],
                                FITS.format("k_proj", "B"): [32, 4]}, None, id="fits"),
    pytest.param("Qwen2-7B-Instruct", {}, "was trained on /x/Qwen2-7B-Instruct, not on the base", id="other-base"),
    pytest.param("tiny-qwen2", {FITS.format("q_proj", "A"): [4, 128]}, "q_proj.lora_A.weight has shape [4, 128]",
                 id="wider-input"),
    pytest.param("tiny-qwen2", {FITS.format("k_proj", "B"): [64, 4]}, "takes 64 in and gives 32 out", id="kv-heads"),
]


@pytest.mark.parametrize("named, shapes, problem", ADAPTERS)
def test_an_adapter_that_does_not_fit_its_base_is_refused(tiny_project: Path, named, shapes, problem) -> None:
    _adapter(tiny_project / "runs" / "tiny-answer" / "adapter", named, shapes)
    found = adapter_problem(load_role("answer", tiny_project / "recipes" / "tiny-answer.yaml"))
    assert (found is None) if problem is None else (found is not None and problem in found)
