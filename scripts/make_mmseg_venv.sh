#!/usr/bin/env bash
# The mmsegmentation 1.2.2 environment for the side-by-side benchmarks (benchmarks/peers.py, docs/peers.md).
# mmsegmentation is never a segattn dependency: it gets its own virtual environment, with the same torch
# and segattn from this checkout (--no-deps). Usage, from anywhere:
#   bash scripts/make_mmseg_venv.sh [DIR]        # DIR defaults to mmseg-venv/ in the checkout (git-ignored)
#   DIR/bin/python benchmarks/peers.py ...
# mmcv-lite 2.1.0 (the newest mmseg 1.2.2 accepts) ships no compiled mmcv._ext; benchmarks/peers.py
# registers a placeholder before importing mmseg (its install_ext_placeholder), checked at the end here.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-mmseg-venv}
PY=${PYTHON:-python3}
if [ -e "$DIR" ] && [ ! -x "$DIR/bin/python" ]; then
  echo "make_mmseg_venv.sh: error: $DIR exists and is not a virtual environment (expected a new folder)" >&2
  exit 2
fi
[ -x "$DIR/bin/python" ] || "$PY" -m venv "$DIR"
"$DIR/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$DIR/bin/python" -m pip install -q "torch==${TORCH_VERSION:-2.13.0}" mmsegmentation==1.2.2 mmengine==0.10.7 \
  mmcv-lite==2.1.0 ftfy regex
"$DIR/bin/python" -m pip install -q --no-deps -e .
"$DIR/bin/python" - <<'PY'
import sys

sys.path.insert(0, "benchmarks")
from peers import install_ext_placeholder  # noqa: E402

install_ext_placeholder()
import mmseg  # noqa: E402
import mmseg.models  # noqa: E402,F401

import segattn  # noqa: E402

print(f"mmsegmentation {mmseg.__version__} and segattn {segattn.__version__} ready in {sys.prefix}")
PY
