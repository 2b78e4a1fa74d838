"""The EMA warning about a non-finite batch says what it protects (the bases) and what it does not."""

from __future__ import annotations

import pytest
import torch

import segattn
from segattn.lowrank.hooks import call_step_hooks


def test_nan_warning_does_not_promise_more_than_it_does():
    torch.manual_seed(0)
    m = segattn.create_module("ema", 8, num_bases=4, num_stages=2).train()
    m(torch.randn(2, 8, 5, 6))
    call_step_hooks(m)
    x = torch.randn(2, 8, 5, 6)
    x[1, 0, 2, 2] = float("nan")
    y = m(x)
    assert not torch.isfinite(y).all()  # the output is not protected, as the warning must say
    with pytest.warns(UserWarning) as record:
        call_step_hooks(m)
    text = str(record[0].message)
    assert "Only the EM bases are protected" in text and "BatchNorm running statistics" in text
    assert "a training loop of your own must check the input or the loss" in text
    assert torch.isfinite(m.bases).all()
