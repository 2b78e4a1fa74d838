"""ISA: permutation round trips, dense limit, full support, masked padding against a naive reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import segattn
from segattn.bench.tensors import LargestTensorRecorder, PeakLiveRecorder, largest_tensor
from segattn.modules import isa
from segattn.ops.attention import softmax_attention
from segattn.ops.flops import count_macs
from tests.helpers import perturb_

C = 8
SIZES = [(8, 8), (7, 13), (1, 1), (5, 3)]
FACTORS = [(2, 2), (3, 4), (8, 8), (1, 3)]


def make(dtype: torch.dtype = torch.float64, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    module = segattn.create_module("isa", C, **kwargs)
    return perturb_(module).to(dtype).eval()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("factor", FACTORS)
def test_layout_round_trip_is_exact(size, factor):
    x = torch.randn(2, 3, *size)
    padded = isa.pad_map(x, factor)
    assert padded.shape[2] % factor[0] == 0 and padded.shape[3] % factor[1] == 0
    assert padded.shape[2] - size[0] < factor[0] and padded.shape[3] - size[1] < factor[1]
    hw = (padded.shape[2], padded.shape[3])
    long = isa.group_long(padded, factor)
    assert long.shape == (2, factor[0] * factor[1], hw[0] * hw[1] // (factor[0] * factor[1]), 3)
    back = isa.ungroup_long(long, 2, hw, factor)
    short = isa.group_short(back, factor)
    assert short.shape == (2, hw[0] * hw[1] // (factor[0] * factor[1]), factor[0] * factor[1], 3)
    back = isa.ungroup_short(short, 2, hw, factor)
    assert torch.equal(isa.crop_map(back, size, factor), x)


def test_groups_are_lattices_and_cells():
    factor, (h, w) = (2, 3), (4, 6)
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).unsqueeze(0).double()
    long = isa.group_long(coords, factor)[0]  # (6 groups, 4 members, 2)
    assert torch.equal(long[..., 0] % 2, long[:, :1, 0].expand(-1, 4) % 2)  # same row offset in group
    assert torch.equal(long[..., 1] % 3, long[:, :1, 1].expand(-1, 4) % 3)
    short = isa.group_short(coords, factor)[0]  # (4 groups, 6 members, 2)
    assert torch.equal(short[..., 0] // 2, short[:, :1, 0].expand(-1, 6) // 2)  # same cell
    assert torch.equal(short[..., 1] // 3, short[:, :1, 1].expand(-1, 6) // 3)


@pytest.mark.parametrize("mask_padding", [False, True])
@pytest.mark.parametrize("size", [(8, 8), (7, 5), (1, 1)])
def test_identity_attention_returns_input(monkeypatch, mask_padding, size):
    module = make(torch.float32, down_factor=(3, 2), mask_padding=mask_padding)
    for stage in (module.long, module.short):
        stage.value, stage.out = nn.Identity(), nn.Identity()
    monkeypatch.setattr(isa, "attend", lambda q, k, v, scale=None, weights=False: (v, None))
    x = torch.randn(2, C, *size)
    assert torch.equal(module(x), x)


def dense_sa(stage, z: torch.Tensor) -> torch.Tensor:
    q, k, v = (t.flatten(2).transpose(1, 2) for t in (stage.query(z), stage.key(z), stage.value(z)))
    out = softmax_attention(q, k, v, scale=stage.key_channels**-0.5, return_weights=True)[0]
    return stage.out(out.transpose(1, 2).reshape(z.shape[0], -1, *z.shape[2:]))


def test_unit_down_factor_is_dense_then_pointwise():
    module = make(down_factor=(1, 1))
    x = torch.randn(2, C, 5, 7, dtype=torch.float64)
    ctx = dense_sa(module.long, x)
    expected = module.short.out(module.short.value(ctx))  # groups of one pixel: softmax weight 1
    torch.testing.assert_close(module(x), expected, atol=1e-10, rtol=1e-10)


def grouped_naive(stage, q, k, v, ids: torch.Tensor, key_ok: torch.Tensor) -> torch.Tensor:
    """Dense attention over maps (B, C, h, w), restricted to equal ``ids`` and to keys with ``key_ok``."""
    shape = q.shape
    q, k, v = (t.flatten(2).transpose(1, 2) for t in (q, k, v))
    logits = q @ k.transpose(1, 2) * stage.key_channels**-0.5
    allowed = (ids[:, None] == ids[None, :]) & key_ok[None, :]
    attn = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
    attn = attn.nan_to_num(0.0)  # a query whose group is all padding reads nothing (its values are 0)
    return stage.out((attn @ v).transpose(1, 2).reshape(shape[0], -1, *shape[2:]))


@pytest.mark.parametrize("size", [(7, 5), (6, 6), (2, 9)])
def test_mask_padding_matches_naive_grouping(size):
    factor = (3, 2)
    module = make(down_factor=factor, mask_padding=True)
    x = torch.randn(2, C, *size, dtype=torch.float64)
    valid = isa.pad_map(torch.ones(1, 1, *size, dtype=torch.bool), factor).reshape(-1)
    hp, wp = isa.pad_map(x, factor).shape[2:]
    rows = torch.arange(hp)[:, None].expand(hp, wp).reshape(-1)
    cols = torch.arange(wp)[None, :].expand(hp, wp).reshape(-1)
    long_ids = (rows % factor[0]) * 100 + cols % factor[1]
    short_ids = (rows // factor[0]) * 100 + cols // factor[1]
    s1 = module.long
    q, k, v = (isa.pad_map(f(x), factor) for f in (s1.query, s1.key, s1.value))
    z = grouped_naive(s1, q, k, v, long_ids, valid)  # padded inputs excluded as keys
    s2 = module.short
    z = grouped_naive(s2, s2.query(z), s2.key(z), s2.value(z), short_ids, torch.ones_like(valid))  # relays
    torch.testing.assert_close(module(x), isa.crop_map(z, size, factor), atol=1e-10, rtol=1e-10)


def test_mask_padding_is_the_reference_when_nothing_is_padded():
    ref, masked = make(down_factor=(2, 3)), make(down_factor=(2, 3), mask_padding=True)
    x = torch.randn(1, C, 6, 9, dtype=torch.float64)
    torch.testing.assert_close(ref(x), masked(x), atol=1e-12, rtol=1e-12)


def test_reference_padding_participates():
    ref, masked = make(down_factor=(3, 2)), make(down_factor=(3, 2), mask_padding=True)
    x = torch.randn(1, C, 7, 5, dtype=torch.float64)
    assert not torch.allclose(ref(x), masked(x))


@pytest.mark.parametrize("mask_padding", [False, True])
@pytest.mark.parametrize("size", [(6, 6), (7, 5)])
def test_long_times_short_has_full_support(mask_padding, size):
    module = make(down_factor=(3, 2), mask_padding=mask_padding)
    x = torch.randn(1, C, *size, dtype=torch.float64, requires_grad=True)
    module(x)[0, :, 1, 2].sum().backward()
    assert bool((x.grad.abs().sum(1) != 0).all())


def test_long_stage_alone_is_sparse():
    module = make(down_factor=(3, 2))
    x = torch.randn(1, C, 6, 6, dtype=torch.float64, requires_grad=True)
    z = isa.pad_map(x, module.down_factor)
    ctx, _ = module._stage(module.long, z, isa.group_long, isa.ungroup_long, False)
    ctx[0, :, 1, 2].sum().backward()
    support = x.grad.abs().sum(1)[0] != 0
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[1::3, 0::2] = True  # the stride-(3, 2) lattice through (1, 2)
    assert torch.equal(support, expected)


def test_attention_maps():
    module = make(down_factor=(2, 3))
    _, maps = module(torch.randn(2, C, 5, 7, dtype=torch.float64), return_attention=True)
    # padded to 6 x 9: long = 6 groups of 3 x 3 = 9, short = 9 groups of 6
    assert maps["long"].shape == (2, 6, 9, 9) and maps["short"].shape == (2, 9, 6, 6)
    for a in maps.values():
        torch.testing.assert_close(a.sum(-1), torch.ones_like(a[..., 0]))


@pytest.mark.parametrize("size", [(7, 5), (6, 6)])
def test_flops_mask_padding(size):
    module = make(torch.float32, down_factor=(3, 2), mask_padding=True)
    assert module.flops(*size) == count_macs(module, torch.randn(1, C, *size))


def test_compile_fullgraph():
    module = make(torch.float32, down_factor=(3, 2), mask_padding=True)
    x = torch.randn(1, C, 7, 5)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x))


def test_bad_arguments():
    with pytest.raises(ValueError, match="down_factor"):
        segattn.create_module("isa", C, down_factor=(0, 8))


def test_no_n_by_n_tensor_forward_backward():
    module = segattn.create_module("isa", 16).train()
    x = torch.randn(1, 16, 40, 40, requires_grad=True)
    n = 40 * 40
    rec = largest_tensor(module, x)
    assert 0 < rec.largest < n * n, rec.largest_op
    assert rec.largest <= 16 * n  # the fused kernel: nothing beyond a feature map
    weights = LargestTensorRecorder()
    with weights, torch.no_grad():  # with the weights requested the group affinities appear (B, G, S, S)
        module(x, return_attention=True)
    assert weights.largest == n * max(25, 64)  # N x g (64 groups of 25) and N x l (25 cells of 64)


def test_training_peak_has_no_padding_copy_and_no_chunked_copies():
    """Forward + backward at a size the groups divide: pad_map hands the map through (no copy) and the
    groups' few keys (16 <= 64 value channels) take the plain product, not the chunked path's saved
    copies. 21.26 maps of (1, 64, 32, 32) measured; each of the two mutations adds one or more."""
    torch.manual_seed(0)
    module = segattn.create_module("isa", 64).train()
    x = torch.randn(1, 64, 32, 32, requires_grad=True)
    with PeakLiveRecorder() as rec:
        module(x).mean().backward()
    assert rec.peak <= 21.5 * x.numel() * 4, rec.peak / (x.numel() * 4)
