#!/usr/bin/env bash
# Build the wheel, install it WITHOUT extras into a fresh venv (local torch first) and run the quick
# demo from outside the checkout: a plain `pip install segattn` must run the main job and its YAML
# configs. Fails if building the wheel prints a setuptools deprecation warning (license metadata).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/segattn-wheel.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
"$PY" -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$TMP/venv/bin/python" -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
# build in an isolated environment (fresh setuptools from the index), verbose so backend warnings show
"$TMP/venv/bin/python" -m pip wheel -v --no-deps -w "$TMP/dist" "$ROOT" >"$TMP/build.log" 2>&1 \
  || { tail -40 "$TMP/build.log"; echo "wheel build failed"; exit 1; }
if grep -E "DeprecationWarning|deprecated" "$TMP/build.log" | grep -iv "pip" ; then
  echo "building the wheel printed a deprecation warning (see above)"; exit 1
fi
WHEEL=$(ls "$TMP"/dist/segattn-*.whl)
"$TMP/venv/bin/python" -m pip install -q "$WHEEL"
cd "$TMP"   # outside the checkout: only the installed wheel can be imported
"$TMP/venv/bin/segattn" --version
"$TMP/venv/bin/python" -c "import segattn, os; assert not segattn.__file__.startswith('$ROOT'), segattn.__file__"
"$TMP/venv/bin/segattn" demo --quick --out "$TMP/demo" >"$TMP/demo.log" 2>&1 \
  || { tail -20 "$TMP/demo.log"; df -h "$TMP" "$ROOT"; exit 1; }  # df: a full disk is the usual cause of a failed write
tail -3 "$TMP/demo.log"
echo "wheel $(basename "$WHEEL"): installed without extras, demo --quick ran from $TMP"
