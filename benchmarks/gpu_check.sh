#!/usr/bin/env bash
# The GPU check, one script for a lent NVIDIA machine (what it runs: benchmarks/gpu_check.py).
#
#   benchmarks/gpu_check.sh            the Qwen2-7B shape on the GPU: under 8 minutes on an H100/H200
#   benchmarks/gpu_check.sh --tiny     the same stages with a 2-layer shape, on CPU (the tests run it)
#   make gpu-check [ARGS=--tiny]
#
# Needs Python with torch, transformers and peft (the lent machine has them). When
# the Python lacks llamafactory and benchmarks/wheels/ exists (`make gpu-wheels` fills it where
# there is network), llamafactory and the pure-Python packages missing there are installed from
# it, offline, into benchmarks/.gpu-site/ (nothing outside it changes); the project runs from here.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
if [ -n "${PYTHON:-}" ]; then python="$PYTHON"
elif [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"
else python="$(command -v python3)"; fi

site="$here/.gpu-site"
has_llamafactory() { "$python" -c 'import llamafactory' 2>/dev/null; }
if ! has_llamafactory && [ ! -e "$site/.installed" ] && ls "$here"/wheels/*.whl >/dev/null 2>&1; then
    echo "installing $(ls "$here"/wheels/*.whl | wc -l) wheels from $here/wheels into $site (offline)"
    "$python" -m pip install --quiet --no-index --no-deps --target "$site" "$here"/wheels/*.whl
    touch "$site/.installed"
fi
if [ -d "$site" ]; then
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$site/bin:$PATH"  # llamafactory-cli
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # `python -m orchestrator` from this checkout
export DISABLE_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$python" -c 'import torch, transformers, peft, llamafactory' 2>/dev/null || {
    echo "Error: $python lacks torch, transformers, peft or llamafactory; run \`make gpu-wheels\` where there is network and bring benchmarks/wheels/" >&2
    exit 2
}
exec "$python" "$here/gpu_check.py" "$@"
