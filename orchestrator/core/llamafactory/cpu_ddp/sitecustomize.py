"""Run by every Python process we start on a machine with no usable GPU (PYTHONPATH, set by
core/llamafactory/launch.py no_gpu_env).

1. accelerate names a CPU process's device cpu:<local rank>, transformers resumes an optimizer
with torch.load(map_location=that device), and torch (2.14) knows only "cpu": "don't know how to
restore data location ... (tagged with cpu:0)". Teach it that cpu:N is the CPU.

2. A CUDA-built torch reports its build's accelerator (cuda) from
torch.accelerator.current_accelerator() even with no GPU; gptqmodel (7.2, utils/importer.py
normalize_device_device_map) then picks its CUDA-only Triton kernel for device_map "auto" and
the first request fails: "Expected a cuda device, but got: cpu". Report only an accelerator
that is there, so it picks its CPU kernel."""

import torch
import torch.accelerator
import torch.serialization


def _tag(obj: object) -> None:
    return None  # saving is unchanged: CPU tensors are tagged "cpu"


def _cpu_n(obj: object, location: str) -> object | None:
    return obj if location.startswith("cpu:") else None


torch.serialization.register_package(11, _tag, _cpu_n)

_current_accelerator = torch.accelerator.current_accelerator


def _available_accelerator(check_available: bool = False) -> object:
    found = _current_accelerator(check_available=False)  # torch's is_available() calls back in here
    return None if found is not None and found.type == "cuda" and not torch.cuda.is_available() else found


torch.accelerator.current_accelerator = _available_accelerator
