#!/usr/bin/env bash
# Create .venv, install the local CPU torch wheel first, then segattn with its extras (onnx, hub: export tests;
# docs: the documentation site, built by scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first, pinned to the wheel on local disk; the project itself only asks for torch>=2.1.
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev,viz,tensorboard,progress,onnx,hub,docs,slurm]"   # docs: the site (mkdocs.yml); slurm: submitit (its launcher test); scipy is core
echo "segattn installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
