"""Golden outputs: every registered module, upsampler and model against its stored output.

The data (tests/golden/{modules,models}.pt, float32) comes from ``scripts/make_golden.py`` with the
seeded tiny instances of ``cases.py``. A failure means the numbers changed: if that was intended
(a fix, a new default), regenerate and say so in the commit; otherwise a refactor drifted.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from tests.golden.cases import GOLDEN_DIR, model_cases, module_cases, run_case

MODULES, MODELS = module_cases(), model_cases()


def stored(kind: str) -> dict:
    return torch.load(os.path.join(GOLDEN_DIR, f"{kind}.pt"), weights_only=True)


@pytest.fixture(scope="module")
def golden():
    return {"modules": stored("modules"), "models": stored("models")}


def check(name: str, case, data: dict) -> None:
    assert name in data, f"{name} has no golden output: run scripts/make_golden.py (and commit tests/golden/)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = run_case(case)
    ref = data[name]
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, atol=1e-4 * float(ref.abs().max()) + 1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_matches_golden(name, golden):
    check(name, MODULES[name], golden["modules"])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_matches_golden(name, golden):
    check(name, MODELS[name], golden["models"])


def test_golden_data_stays_small():
    total = sum(os.path.getsize(os.path.join(GOLDEN_DIR, f)) for f in os.listdir(GOLDEN_DIR) if f.endswith(".pt"))
    assert total < 2 * 1024 * 1024
