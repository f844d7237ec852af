"""Run by every Python process of a CPU training under torchrun (PYTHONPATH, set by
core/launch.py). accelerate names a CPU process's device cpu:<local rank>, transformers resumes
an optimizer with torch.load(map_location=that device), and torch (2.14) knows only "cpu":
"don't know how to restore data location ... (tagged with cpu:0)". Teach it that cpu:N is the CPU."""

import torch.serialization


def _tag(obj: object) -> None:
    return None  # saving is unchanged: CPU tensors are tagged "cpu"


def _cpu_n(obj: object, location: str) -> object | None:
    return obj if location.startswith("cpu:") else None


torch.serialization.register_package(11, _tag, _cpu_n)
