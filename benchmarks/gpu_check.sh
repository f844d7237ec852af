#!/usr/bin/env bash
# The GPU check, one script for a lent NVIDIA machine (what it runs: benchmarks/gpu_check.py).
#
#   benchmarks/gpu_check.sh            the Qwen2-7B shape on the GPU: under 8 minutes on an H100/H200
#   benchmarks/gpu_check.sh --tiny     the same stages with a 2-layer shape, on CPU (the tests run it)
#   make gpu-check [ARGS=--tiny]
#
# Needs Python with torch (the lent machine has it). When the Python lacks llamafactory and
# benchmarks/wheels/ exists (`make gpu-wheels` fills it where there is network), the wheels are
# installed from it, offline, into benchmarks/.gpu-site/ (nothing outside it changes), in front of
# the machine's own packages: LLaMA-Factory 0.9.5's transformers, peft, accelerate and tokenizers
# over the machine's newer ones, and the GPTQ packages (benchmarks/gpu_wheels.py lists them; the
# check says which versions are in force and from where). The project runs from this checkout.
# The lent GPU machine has no vLLM and a run there carries at most 64 MiB of wheels (vLLM is far
# larger): the check's vLLM step runs only where this Python already has `vllm`, else it says so.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
if [ -n "${PYTHON:-}" ]; then python="$PYTHON"
elif [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"
else python="$(command -v python3)"; fi

site="$here/.gpu-site"
has_llamafactory() { "$python" -c 'import llamafactory' 2>/dev/null; }
# installed again when the wheels change (the stamp holds their names)
wheels="$(ls "$here"/wheels/*.whl 2>/dev/null || true)"
if [ -n "$wheels" ] && { [ -e "$site/.installed" ] || ! has_llamafactory; } \
        && [ "$(cat "$site/.installed" 2>/dev/null)" != "$wheels" ]; then
    echo "installing $(echo "$wheels" | wc -l) wheels from $here/wheels into $site (offline)"
    rm -rf "$site"
    # shellcheck disable=SC2086  # one wheel a word
    "$python" -m pip install --quiet --no-index --no-deps --no-compile --target "$site" $wheels
    echo "$wheels" > "$site/.installed"
fi
if [ -e "$site/.installed" ]; then
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" GPU_CHECK_SITE="$site"
    export PATH="$site/bin:$PATH"  # llamafactory-cli
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # `python -m orchestrator` from this checkout
# (no DISABLE_VERSION_CHECK: gpu_check.py runs LLaMA-Factory's own version check first)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# (found, not imported: importing them costs seconds of CPU, and gpu_check.py does so next)
"$python" -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))' \
        torch transformers peft llamafactory 2>/dev/null || {
    echo "Error: $python lacks torch, transformers, peft or llamafactory; run \`make gpu-wheels\` where there is network and bring benchmarks/wheels/" >&2
    exit 2
}
exec "$python" "$here/gpu_check.py" "$@"
