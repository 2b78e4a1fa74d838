"""ANN (APNB / AFNB) identities in float64."""

from __future__ import annotations

import pytest
import torch

import segattn
from segattn.modules.pooling import pyramid_pool
from segattn.ops.attention import reference_attention
from segattn.ops.flops import count_macs
from tests.helpers import perturb_

C = 16
D64 = torch.float64


def build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(segattn.create_module(name, C, **kwargs)).to(D64).eval()


def test_apnb_with_full_size_pooling_is_ocnet_base():
    apnb = build("ann_apnb", pool_sizes=(5,), act="leaky_relu")
    base = build("ocnet_base", act="leaky_relu")
    base.load_state_dict(apnb.state_dict())
    x = torch.randn(2, C, 5, 5, dtype=D64)
    y, f = apnb(x, return_attention=True)
    assert f["attention"].shape == (2, 25, 25) and f["context"].abs().max() > 1e-2
    torch.testing.assert_close(y, base(x), atol=1e-10, rtol=1e-10)


def test_apnb_attends_to_110_anchors_pooled_after_projection():
    apnb = build("ann_apnb")
    x = torch.randn(2, C, 7, 9, dtype=D64)
    _, f = apnb(x, return_attention=True)
    q, _, _ = apnb.attention.project(x)
    keys = pyramid_pool(q, (1, 3, 6, 8))
    logits = q.flatten(2).transpose(1, 2) @ keys * apnb.attention.key_channels**-0.5
    assert keys.shape[-1] == 110
    torch.testing.assert_close(f["attention"], torch.softmax(logits, dim=-1), atol=1e-12, rtol=0)


def test_afnb_two_input_form_with_other_channels_and_size():
    afnb = build("ann_afnb", low_channels=6)
    x, low = torch.randn(2, C, 7, 9, dtype=D64), torch.randn(2, 6, 14, 18, dtype=D64)
    y, f = afnb(x, low=low, return_attention=True)
    assert y.shape == x.shape and f["attention"].shape == (2, 63, 110)
    assert afnb.flops(7, 9, low_size=(14, 18)) == count_macs(afnb, x[:1], low=low[:1])
    with torch.no_grad():
        with reference_attention():
            naive = afnb(x, low=low)
    torch.testing.assert_close(y, naive, atol=1e-10, rtol=1e-10)
    other = low.clone()
    other[1] = torch.randn_like(other[1])
    assert (afnb(x, low=other)[1] - y[1]).abs().max() > 1e-3  # the output depends on the low-level map


def test_afnb_one_input_form_is_low_equals_x():
    afnb = build("ann_afnb")
    x = torch.randn(2, C, 5, 6, dtype=D64)
    torch.testing.assert_close(afnb(x), afnb(x, low=x), atol=0, rtol=0)


def test_afnb_errors():
    afnb = segattn.create_module("ann_afnb", C, low_channels=6)
    x = torch.randn(1, C, 4, 4)
    with pytest.raises(ValueError, match="low_channels=6"):
        afnb(x)
    with pytest.raises(ValueError, match="expects 6 input channels, got 5"):
        afnb(x, low=torch.randn(1, 5, 4, 4))
    with pytest.raises(ValueError, match="batch size"):
        afnb(x, low=torch.randn(2, 6, 4, 4))


@pytest.mark.parametrize("name", ["ann_apnb", "ann_afnb"])
def test_fresh_context_is_zero_and_fused_equals_naive(name):
    torch.manual_seed(0)
    fresh = segattn.create_module(name, C).eval()
    _, f = fresh(torch.randn(2, C, 5, 6), return_attention=True)
    assert torch.count_nonzero(f["context"]) == 0
    module = build(name)
    x = torch.randn(2, C, 6, 7, dtype=D64)
    with torch.no_grad():
        fused = module(x)
        with reference_attention():
            naive = module(x)
    torch.testing.assert_close(fused, naive, atol=1e-10, rtol=1e-10)
