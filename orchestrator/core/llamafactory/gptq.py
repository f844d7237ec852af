"""A calibrated 4-bit GPTQ export with `llamafactory-cli export` (export_quantization_bit: optimum
and gptqmodel): the quantized tiny model, and the second step of merge.export_quantization_bit
(LLaMA-Factory quantizes no adapter: "Please merge adapters before quantizing the model.", so the
merged model is quantized on its own). Needs `make setup-quant`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from orchestrator.core.common.errors import StageFailed, UserError
from orchestrator.core.common.files import atomic_write_json, atomic_write_jsonl, atomic_write_text
from orchestrator.core.common.process import run
from orchestrator.core.common.progress import clean, say, worth_showing
from orchestrator.core.data.prompts import answer_prompt
from orchestrator.core.llamafactory.launch import cli_path, visible_gpus

SETUP = "the quantization packages are installed by `make setup-quant`"


def missing_packages() -> list[str]:
    """The packages LLaMA-Factory's GPTQ export needs that this environment lacks."""
    import importlib.util

    return [name for name in ("optimum", "gptqmodel") if importlib.util.find_spec(name) is None]


def calibration_texts(questions: list, maxlen: int) -> list[dict[str, str]]:
    """Calibration samples for GPTQ export: Answer prompts joined until each is longer than
    `maxlen` tokens (LLaMA-Factory only takes samples longer than that)."""
    chars = 4 * maxlen  # Qwen2's tokenizer packs well under 4 characters of this text per token
    texts, current = [], ""
    for q in questions:
        current += answer_prompt(q) + "\n"
        if len(current) > chars:
            texts.append({"text": current})
            current = ""
    if current:
        texts.append({"text": current * (chars // len(current) + 1)})
    return texts


def gptq_export(
    source: Path, out: Path, *, questions: list, template: str, stage: str, work_dir: Path,
    bits: int = 4, nsamples: int, maxlen: int, export_size: int,
    timeout: float | None = None, echo: bool = True,
) -> float:
    """Quantize the model in `source` into `out` (a folder that must not exist), calibrated on the
    Answer prompts of `questions`; its config.json keeps no copy of the calibration samples.
    The export YAML, calibration file and log go to `work_dir`. Returns the export's seconds.
    The sizes are the caller's (a merge: what LLaMA-Factory resolved for its recipe)."""
    missing = missing_packages()
    if missing:
        raise UserError(f"{stage}: a GPTQ export needs {', '.join(missing)}, not installed here; {SETUP}")
    # absolute for llamafactory-cli, which runs in work_dir (`tiny-model models/x --quantize gptq`)
    source, out, work_dir = source.absolute(), out.absolute(), work_dir.absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    calibration = atomic_write_jsonl(work_dir / "calibration.jsonl", calibration_texts(questions, maxlen))
    config = {
        "model_name_or_path": str(source), "template": template, "trust_remote_code": True,
        "export_dir": str(out), "export_size": export_size,
        "export_device": "auto" if visible_gpus() else "cpu",  # calibrating a 7B model wants a GPU
        "export_quantization_bit": bits, "export_quantization_dataset": str(calibration),
        "export_quantization_nsamples": nsamples, "export_quantization_maxlen": maxlen,
    }
    yaml_path = atomic_write_text(work_dir / "quantize.yaml", "".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))
    log = work_dir / "quantize.log"
    # GPTQMODEL_DISABLE_PACK_EXT: gptqmodel 7.2 JIT-compiles a C++ packer on first use (31 s by its
    # estimate; 209 s, then a failure and its torch fallback, on a loaded 2-core machine): the fallback at once
    cmd = [cli_path(), "export", str(yaml_path)]
    if echo:
        say(stage, f"$ {' '.join(cmd)}   ({bits}-bit GPTQ, {nsamples} calibration samples; log: {log})")
    finished = run(
        cmd, stage=stage, log_path=log, env={"DISABLE_VERSION_CHECK": "1", "GPTQMODEL_DISABLE_PACK_EXT": os.environ.get("GPTQMODEL_DISABLE_PACK_EXT", "1")},
        cwd=work_dir,
        timeout=timeout,
        on_line=(lambda line: say(stage, clean(line)) if worth_showing(line) else None) if echo else None,
    )
    if finished.returncode != 0 or not (out / "config.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        raise StageFailed(
            f"{stage}: llamafactory-cli export (GPTQ) exited with code {finished.returncode}; last lines:",
            *[f"  {line}" for line in finished.tail[-12:]],
            f"config: {yaml_path}; full log: {log}",
        )
    # optimum saves the tokenized calibration set inside quantization_config: drop it
    model_config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    model_config.get("quantization_config", {}).pop("dataset", None)
    atomic_write_json(out / "config.json", model_config)
    return finished.seconds


def packed_weights(model_dir: Path) -> int:
    """How many packed 4-bit `qweight` tensors the model's safetensors hold."""
    from safetensors import safe_open

    count = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            count += sum(1 for key in f.keys() if key.endswith(".qweight"))
    return count

