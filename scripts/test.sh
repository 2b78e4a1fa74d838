#!/usr/bin/env bash
# The test command: lint, then the whole suite. pytest's exit code 5 ("no tests collected") is not a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
PYBIN=${PYBIN:-.venv/bin/python}
"$PYBIN" -m ruff check src tests benchmarks scripts || exit 1
# The documentation site: any warning (broken link or anchor, page missing from the nav, docstring
# error) fails. Built on a full run (no arguments); skipped without the docs extra, unless
# SEGATTN_REQUIRE_DOCS=1 (CI) makes that a failure.
if [ "${SEGATTN_REQUIRE_DOCS:-}" = 1 ] || { [ $# -eq 0 ] && "$PYBIN" -c "import mkdocs, mkdocstrings" 2>/dev/null; }; then
  start=$(date +%s)
  # Not -q: quiet mode hides the warnings from --strict, which then passes a broken site.
  log=$(NO_MKDOCS_2_WARNING=1 "$PYBIN" -m mkdocs build --strict 2>&1) || { echo "$log"; echo "mkdocs build --strict failed"; exit 1; }
  echo "docs: mkdocs build --strict passed in $(( $(date +%s) - start )) s (site/)"
elif [ $# -gt 0 ]; then
  echo "docs: not built (a subset run; bash scripts/test.sh without arguments builds the site)"
else
  echo "docs: skipped (pip install -e .[docs] to build the site)"
fi
# Two workers: most of the suite is single-threaded Python (tracing, export), so both cores help.
# loadgroup: the blocks of one documentation page run in order in one worker (tests/docs/runner.py).
"$PYBIN" -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadgroup "$@"
rc=$?
[ "$rc" -eq 5 ] && { echo "no tests collected"; exit 0; }
exit "$rc"
