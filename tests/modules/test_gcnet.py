"""GCNet identities (spec successors A.3) in float64, beyond the registry-wide contract."""

from __future__ import annotations

import pytest
import torch

import segattn
from tests.helpers import perturb_

C = 8
D64 = torch.float64


def build(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(segattn.create_module("gcnet", C, **kwargs)).to(D64).eval()


def test_channel_add_adds_one_vector_to_every_position():
    """Query-independent context: y - x is the same C-vector at every pixel."""
    module = build()
    x = torch.randn(2, C, 5, 7, dtype=D64)
    diff = module(x) - x
    torch.testing.assert_close(diff, diff[:, :, :1, :1].expand_as(diff), atol=1e-12, rtol=0)
    assert diff.abs().max() > 1e-3


def test_channel_mul_scales_every_position_by_one_gate():
    module = build(fusion=("channel_mul",))
    x = torch.randn(1, C, 4, 6, dtype=D64).abs() + 0.1
    ratio = module(x) / x
    torch.testing.assert_close(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-12, rtol=0)
    assert bool(((ratio > 0) & (ratio < 1)).all())  # a sigmoid gate


def test_context_is_the_attention_pooled_feature():
    module = build()
    x = torch.randn(2, C, 3, 5, dtype=D64)
    _, f = module(x, return_attention=True)
    a = torch.softmax(module.mask(x).flatten(1), dim=-1)
    torch.testing.assert_close(f["attention"], a, atol=1e-12, rtol=0)
    torch.testing.assert_close(f["context"], torch.einsum("bn,bcn->bc", a, x.flatten(2)), atol=1e-12, rtol=0)


def test_zero_mask_is_average_pooling():
    """w_k = 0, b_k = 0: uniform attention, the 'avg' pooling of the same transform."""
    att = build()
    with torch.no_grad():
        att.mask.weight.zero_()
    avg = segattn.create_module("gcnet", C, pooling="avg").to(D64).eval()
    avg.load_state_dict({k: v for k, v in att.state_dict().items() if not k.startswith("mask.")})
    x = torch.randn(2, C, 4, 5, dtype=D64)
    torch.testing.assert_close(att(x), avg(x), atol=1e-12, rtol=0)


def test_fresh_block_is_the_identity():
    module = segattn.create_module("gcnet", C).eval()
    x = torch.randn(1, C, 5, 5)
    assert torch.equal(module(x), x)


def test_bottleneck_width_follows_the_ratio():
    assert segattn.create_module("gcnet", 64).planes == 16
    assert segattn.create_module("gcnet", 64, ratio=1 / 16).planes == 4


@pytest.mark.parametrize("kw", [{"pooling": "max"}, {"fusion": ()}, {"fusion": ("channel_sum",)}, {"ratio": 0}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        segattn.create_module("gcnet", C, **kw)
