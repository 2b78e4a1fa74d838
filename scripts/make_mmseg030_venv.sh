#!/usr/bin/env bash
# A separate venv with mmsegmentation 0.30.0 + mmcv 1.7.2 (no compiled ops) for
# scripts/make_mmseg030_fixtures.py. Never a dependency of segattn.
#
#   bash scripts/make_mmseg030_venv.sh [VENV]          # default: /tmp/mmseg030
#   TORCH_SPEC=/path/to/torch-2.13.0+cpu-...whl bash scripts/make_mmseg030_venv.sh VENV
#
# mmcv 1.7.2 has no wheel for current Python / torch: it is built from its sdist without ops
# (MMCV_WITH_OPS=0, a minute or two), which needs setuptools < 81 and --no-build-isolation (its
# setup.py imports torch). mmcv 1.7 imports torchvision at module level but the fixture script uses
# none of it, so a two-file stub stands in (a torchvision wheel would pull a matching torch). The
# fixture script registers a placeholder mmcv._ext itself.
set -euo pipefail
VENV=${1:-/tmp/mmseg030}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "$TORCH_SPEC"
"$VENV/bin/pip" install -q 'setuptools<81' wheel 'numpy<2.3'
MMCV_WITH_OPS=0 "$VENV/bin/pip" install -q --no-build-isolation mmcv==1.7.2
"$VENV/bin/pip" install -q mmsegmentation==0.30.0 prettytable
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if ! "$VENV/bin/python" -c 'import torchvision' 2>/dev/null; then
  mkdir -p "$SITE/torchvision/models"
  printf '"""Stub: mmcv 1.7 imports torchvision; the fixture scripts use none of it."""\n__version__ = "0.0.0+stub"\nfrom . import models  # noqa: F401\n' > "$SITE/torchvision/__init__.py"
  printf '"""Stub."""\n' > "$SITE/torchvision/models/__init__.py"
fi
"$VENV/bin/python" - <<'PY'
import sys, types
ext = types.ModuleType("mmcv._ext")
ext.__getattr__ = lambda name: (_ for _ in ()).throw(AttributeError(name))
sys.modules["mmcv._ext"] = ext
import mmcv, mmseg
print(f"mmcv {mmcv.__version__}, mmseg {mmseg.__version__}: ready")
PY
