"""Regenerate the golden outputs in tests/golden/ (every registered module, upsampler and model).

    .venv/bin/python scripts/make_golden.py            # writes tests/golden/{modules,models}.pt

Each entry is the float32 eval-mode output of a seeded, tiny instance on a seeded input (see
``golden_cases`` in tests/golden/cases.py, shared with the test). Regenerate only when a change of
the numbers is intended (a fix, a new default), and say so in the commit message: the golden test
exists so that a refactor cannot change the outputs silently. Run with one thread for
reproducibility (the script sets it).
"""

from __future__ import annotations

import os
import sys
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.golden.cases import GOLDEN_DIR, model_cases, module_cases, run_case  # noqa: E402


def main() -> int:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # SGR's random-graph warning
    for kind, cases in (("modules", module_cases()), ("models", model_cases())):
        out = {name: run_case(case) for name, case in cases.items()}
        path = os.path.join(GOLDEN_DIR, f"{kind}.pt")
        tmp = path + ".tmp"
        torch.save(out, tmp)
        os.replace(tmp, path)
        print(f"{path}: {len(out)} entries, {os.path.getsize(path) / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
