"""PSANet: the pure-PyTorch PSA mask op against the reference loops, spec 1.10 / 3.2 identities."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import segattn
from segattn.modules import psanet
from segattn.modules.psanet import psa_mask
from segattn.ops.flops import count_macs
from tests.helpers import perturb_

C = 8


def loop_psa_mask(mask: torch.Tensor, psa_type: str) -> torch.Tensor:
    """The mmcv CPU kernel's loops (psamask.cpp), written plainly: (B, mh, mw, h, w) -> (B, N, N)."""
    b, mh, mw, h, w = mask.shape
    hm, wm = (mh - 1) // 2, (mw - 1) // 2
    buf = torch.zeros(b, h * w, h * w, dtype=mask.dtype)
    for ph in range(h):
        for pw in range(w):
            for a in range(max(0, hm - ph), min(mh, h + hm - ph)):
                for c in range(max(0, wm - pw), min(mw, w + wm - pw)):
                    other = (a + ph - hm) * w + (c + pw - wm)
                    here = ph * w + pw
                    if psa_type == "collect":
                        buf[:, other, here] = mask[:, a, c, ph, pw]
                    else:
                        buf[:, here, other] = mask[:, a, c, ph, pw]
    return buf


@pytest.mark.parametrize("psa_type", ["collect", "distribute"])
@pytest.mark.parametrize("shape", [(3, 4, 3, 4), (5, 7, 3, 4), (4, 4, 4, 4), (2, 3, 5, 6), (9, 9, 3, 2), (1, 1, 2, 2)])
def test_mask_op_matches_loops(psa_type, shape):
    mask = torch.randn(2, *shape, dtype=torch.float64)
    torch.testing.assert_close(psa_mask(mask, psa_type), loop_psa_mask(mask, psa_type), atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["collect", "distribute"])
def test_buffer_entries_by_their_meaning(kind):
    """Per (source j, target i) pair, independent of both the gather and the mmcv loops: collect reads
    the mask predicted at the target i at j's relative position, distribute the mask predicted at the
    source j at i's relative position; pairs outside the window are 0."""
    b, mh, mw, h, w = 2, 5, 3, 3, 4
    mask = torch.randn(b, mh, mw, h, w, dtype=torch.float64)
    buf = psa_mask(mask, kind)
    for j in range(h * w):
        for i in range(h * w):
            at, other = (i, j) if kind == "collect" else (j, i)
            dh, dw = other // w - at // w + (mh - 1) // 2, other % w - at % w + (mw - 1) // 2
            inside = 0 <= dh < mh and 0 <= dw < mw
            expected = mask[:, dh, dw, at // w, at % w] if inside else torch.zeros(b, dtype=torch.float64)
            assert torch.equal(buf[:, j, i], expected), (kind, j, i)


@pytest.mark.parametrize("size", [(3, 4), (5, 2), (1, 1)])
def test_over_complete_mask_fills_nothing(size):
    h, w = size
    mask = torch.rand(2, 2 * h - 1, 2 * w - 1, h, w, dtype=torch.float64) + 1.0  # no zero values
    for kind in ("collect", "distribute"):
        assert torch.count_nonzero(psa_mask(mask, kind)) == 2 * (h * w) ** 2
        assert torch.isfinite(psa_mask(mask, kind, fill=float("-inf"))).all()
    # every over-complete entry is used exactly once per target: the buffer holds each mask value once
    buf = psa_mask(mask, "collect")
    index = buf.unsqueeze(1) == mask.flatten(1, 2).flatten(2).unsqueeze(2)  # (B, M, N_src, N_tgt)
    used = index.any(2).reshape(2, -1, h, w).sum(1)
    assert torch.equal(used, torch.full((2, h, w), h * w))


def test_smaller_mask_zero_fills_outside_the_window():
    h, w, mh, mw = 4, 5, 3, 3
    mask = torch.rand(1, mh, mw, h, w, dtype=torch.float64) + 1.0
    buf = psa_mask(mask, "collect")
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    inside = ((rows[:, None] - rows[None]).abs() <= 1) & ((cols[:, None] - cols[None]).abs() <= 1)
    assert torch.equal(buf[0] != 0, inside)
    assert torch.equal(torch.isinf(psa_mask(mask, "collect", fill=float("-inf"))[0]), ~inside)


def make(dtype: torch.dtype = torch.float64, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return perturb_(segattn.create_module("psanet", C, **kwargs)).to(dtype).eval()


def test_attention_maps_are_softmax_over_sources():
    module = make(shrink_factor=1, mask_size=(9, 11))
    x = torch.randn(2, C, 5, 6, dtype=torch.float64)
    _, maps = module(x, return_attention=True)
    assert set(maps) == {"collect", "distribute"}
    for a in maps.values():
        assert a.shape == (2, 30, 30) and a.dtype == torch.float64
        torch.testing.assert_close(a.sum(1), torch.ones(2, 30, dtype=torch.float64))
        assert bool((a > 0).all())  # over-complete mask (9, 11) for 5 x 6: nothing excluded


@pytest.mark.parametrize("psa_type", ["collect", "distribute"])
def test_output_is_explicit_aggregation(psa_type):
    module = make(psa_type=psa_type, shrink_factor=1, mask_size=(5, 5), normalization_factor=2.0)
    x = torch.randn(1, C, 4, 3, dtype=torch.float64)
    y, maps = module(x, return_attention=True)
    z = module.branches[psa_type].reduce(x).flatten(2)[0]  # (C_m, N)
    expected = module.proj((z @ maps[psa_type][0] / 2.0).reshape(1, -1, 4, 3))
    torch.testing.assert_close(y, expected, atol=1e-12, rtol=1e-10)


def test_mask_fill_excludes_out_of_window_sources():
    zero = make(shrink_factor=1, mask_size=(3, 3))
    excl = make(shrink_factor=1, mask_size=(3, 3), mask_fill="-inf")
    x = torch.randn(1, C, 4, 5, dtype=torch.float64)
    _, a_zero = zero(x, return_attention=True)
    _, a_excl = excl(x, return_attention=True)
    outside = psa_mask(torch.ones(1, 3, 3, 4, 5, dtype=torch.float64), "collect")[0] == 0
    for kind in ("collect", "distribute"):
        inside_kind = ~outside if kind == "collect" else ~outside.T
        assert bool((a_zero[kind][0][~inside_kind] > 0).all()), "reference: zero logits get spurious mass"
        assert bool((a_excl[kind][0][~inside_kind] == 0).all())
        torch.testing.assert_close(a_excl[kind].sum(1), torch.ones(1, 20, dtype=torch.float64))


def test_mask_fill_irrelevant_for_over_complete_mask():
    x = torch.randn(1, C, 5, 4, dtype=torch.float64)
    a = make(shrink_factor=1, mask_size=(9, 7))(x)
    b = make(shrink_factor=1, mask_size=(9, 7), mask_fill="-inf")(x)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("psa_type", ["collect", "distribute", "bi-direction"])
def test_compact_agrees_with_full_given_the_collect_buffer(psa_type):
    """Compact predicts the absolute-position map; fed psa_mask(collect) of the full prediction, the
    two modes give the same buffers and outputs (distribute transposes in both)."""
    h, w = 4, 3
    full = make(psa_type=psa_type, shrink_factor=1, mask_size=(2 * h - 1, 2 * w - 1))
    compact = make(psa_type=psa_type, shrink_factor=1, mask_size=(h, w), compact=True)
    state = {k: v for k, v in full.state_dict().items() if not k.endswith("attention.1.weight")}
    compact.load_state_dict(state, strict=False)

    class ToAbsolute(nn.Module):
        def __init__(self, head: nn.Module) -> None:
            super().__init__()
            self.head = head

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            y = self.head(z).reshape(z.shape[0], 2 * h - 1, 2 * w - 1, h, w)
            return psa_mask(y, "collect").reshape(z.shape[0], h * w, h, w)

    for kind in full.kinds:
        compact.branches[kind].attention = ToAbsolute(full.branches[kind].attention)
    x = torch.randn(2, C, h, w, dtype=torch.float64)
    y_full, a_full = full(x, return_attention=True)
    y_compact, a_compact = compact(x, return_attention=True)
    for kind in full.kinds:
        torch.testing.assert_close(a_compact[kind], a_full[kind], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(y_compact, y_full, atol=1e-12, rtol=1e-12)


def test_compact_distribute_is_collect_transposed():
    module = make(shrink_factor=1, mask_size=(3, 4), compact=True)
    y = torch.randn(2, 12, 3, 4, dtype=torch.float64)
    assert torch.equal(module.buffer(y, "distribute"), module.buffer(y, "collect").transpose(1, 2))


def test_compact_rejects_wrong_size():
    module = make(torch.float32, mask_size=(3, 4), compact=True)
    with pytest.raises(ValueError, match="compact PSA needs mask_size"):
        module(torch.randn(1, C, 9, 9))


def test_shrink_size():
    assert psanet.shrunk_size((59, 59), 2) == (30, 30)
    assert psanet.shrunk_size((60, 7), 2) == (30, 4)
    assert psanet.shrunk_size((1, 1), 2) == (1, 1)


@pytest.mark.parametrize(
    "kwargs",
    [{"psa_type": "collect"}, {"compact": True, "mask_size": (4, 3)}, {"shrink_factor": 1, "mask_size": (5, 5)}],
)
def test_flops_variants(kwargs):
    module = make(torch.float32, **kwargs)
    assert module.flops(7, 5) == count_macs(module, torch.randn(1, C, 7, 5))


def test_compile_fullgraph():
    module = make(torch.float32, mask_size=(7, 7), mask_fill="-inf")
    x = torch.randn(1, C, 7, 6)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x))


def test_bad_arguments():
    with pytest.raises(ValueError, match="psa_type"):
        segattn.create_module("psanet", C, psa_type="both")
    with pytest.raises(ValueError, match="mask_fill"):
        segattn.create_module("psanet", C, mask_fill="nan")
    with pytest.raises(ValueError, match="psa_type"):
        psa_mask(torch.zeros(1, 3, 3, 2, 2), "bi-direction")


def test_mask_index_is_cached_per_size_and_gradients_match_loops():
    psanet._INDEX_CACHE.clear()
    mask = torch.randn(2, 5, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    first = psanet.psa_index(4, 3, 5, 3, mask.device)
    assert psanet.psa_index(4, 3, 5, 3, mask.device) is first  # no rebuild for the same size
    assert psanet.psa_index(3, 4, 5, 3, mask.device) is not first
    for kind in ("collect", "distribute"):
        weight = torch.randn(2, 12, 12, dtype=torch.float64)
        (g_fast,) = torch.autograd.grad((psa_mask(mask, kind) * weight).sum(), mask)
        (g_loop,) = torch.autograd.grad((loop_psa_mask(mask, kind) * weight).sum(), mask)
        torch.testing.assert_close(g_fast, g_loop, atol=0, rtol=0)
    for size in [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]:
        psanet.psa_index(*size, 3, 3, mask.device)
    assert len(psanet._INDEX_CACHE) == psanet._INDEX_CACHE_SIZE  # bounded


def test_normalization_factor_none_divides_by_mask_area():
    torch.manual_seed(0)
    ref = make(torch.float64, mask_size=(5, 3))
    module = make(torch.float64, mask_size=(5, 3), normalization_factor=None)
    module.load_state_dict(ref.state_dict())
    assert module.normalization_factor == 15.0
    x = torch.randn(1, C, 6, 5, dtype=torch.float64)
    z_ref = torch.cat([ref._branch(k, x, (3, 3), True)[0] for k in ref.kinds], 1)
    z = torch.cat([module._branch(k, x, (3, 3), True)[0] for k in module.kinds], 1)
    torch.testing.assert_close(z, z_ref / 15.0)
    with pytest.raises(ValueError, match="normalization_factor"):
        segattn.create_module("psanet", C, normalization_factor=0.0)
