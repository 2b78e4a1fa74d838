#!/usr/bin/env bash
# The test command: lint, then the whole suite. pytest's exit code 5 ("no tests collected") is not a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
PYBIN=${PYBIN:-.venv/bin/python}
"$PYBIN" -m ruff check src tests benchmarks scripts || exit 1
# Two workers: most of the suite is single-threaded Python (tracing, export), so both cores help.
"$PYBIN" -m pytest -q -n "${PYTEST_WORKERS:-2}" "$@"
rc=$?
[ "$rc" -eq 5 ] && { echo "no tests collected"; exit 0; }
exit "$rc"
