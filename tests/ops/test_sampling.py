"""Sampling helpers against naive loops on tiny inputs, fast paths against reference (einsum) paths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segattn.ops.attention import reference_attention
from segattn.ops.flops import count_macs
from segattn.ops.sampling import (
    aggregate_columns,
    deform_unfold,
    unfold_window,
    window_aggregate,
    window_offsets,
)
from tests.helpers import naive_bilinear

D = torch.float64


def naive_unfold(x, k, d):
    b, c, h, w = x.shape
    out = torch.zeros(b, c, k * k, h, w, dtype=x.dtype)
    for s, (dy, dx) in enumerate(window_offsets(k, d)):
        for i in range(h):
            for j in range(w):
                if 0 <= i + dy < h and 0 <= j + dx < w:
                    out[:, :, s, i, j] = x[:, :, i + dy, j + dx]
    return out


def naive_deform(x, off, k, d):
    b, c, h, w = x.shape
    out = torch.zeros(b, c, k * k, h, w, dtype=x.dtype)
    for n in range(b):
        for s, (dy, dx) in enumerate(window_offsets(k, d)):
            for i in range(h):
                for j in range(w):
                    y = i + dy + off[n, 2 * s, i, j].item()
                    xx = j + dx + off[n, 2 * s + 1, i, j].item()
                    out[n, :, s, i, j] = naive_bilinear(x[n], y, xx)
    return out


def naive_aggregate(x, wts, k, d):
    """Loop form of window_aggregate for weights (B, G, K, P, H, W)."""
    b, c, h, w = x.shape
    g, p = wts.shape[1], wts.shape[3]
    r = c // g
    out = torch.zeros(b, c, p, h, w, dtype=x.dtype)
    for ch in range(c):
        for s, (dy, dx) in enumerate(window_offsets(k, d)):
            for i in range(h):
                for j in range(w):
                    if 0 <= i + dy < h and 0 <= j + dx < w:
                        out[:, ch, :, i, j] += wts[:, ch // r, s, :, i, j] * x[:, ch, i + dy, j + dx, None]
    return out


@pytest.mark.parametrize("k,d,size", [(3, 1, (4, 5)), (3, 2, (5, 3)), (5, 1, (1, 1)), (1, 1, (2, 3))])
def test_unfold_window_naive_and_nn_unfold(k, d, size):
    x = torch.randn(2, 3, *size, dtype=D)
    cols = unfold_window(x, k, d)
    torch.testing.assert_close(cols, naive_unfold(x, k, d))
    ref = nn.Unfold(k, dilation=d, padding=d * (k - 1) // 2)(x).view_as(cols)
    torch.testing.assert_close(cols, ref)


@pytest.mark.parametrize("k,d,size", [(3, 1, (4, 5)), (3, 2, (3, 4)), (1, 1, (1, 2))])
def test_deform_unfold_naive(k, d, size):
    x = torch.randn(2, 3, *size, dtype=D)
    off = torch.randn(2, 2 * k * k, *size, dtype=D) * 1.5
    torch.testing.assert_close(deform_unfold(x, off, k, d), naive_deform(x, off, k, d))


@pytest.mark.parametrize("k,d,size", [(3, 1, (6, 7)), (3, 4, (5, 9)), (5, 2, (1, 1)), (3, 12, (7, 13))])
def test_deform_unfold_zero_offsets_is_unfold(k, d, size):
    x = torch.randn(2, 4, *size, dtype=D)
    off = torch.zeros(2, 2 * k * k, *size, dtype=D)
    ref = nn.Unfold(k, dilation=d, padding=d * (k - 1) // 2)(x).view(2, 4, k * k, *size)
    torch.testing.assert_close(deform_unfold(x, off, k, d), ref, atol=1e-12, rtol=0)
    x32 = x.float()
    torch.testing.assert_close(deform_unfold(x32, off.float(), k, d), ref.float(), atol=1e-5, rtol=1e-5)


def test_deform_unfold_integer_offset_is_shift():
    x = torch.randn(1, 2, 5, 6, dtype=D)
    off = torch.zeros(1, 2, 5, 6, dtype=D)
    off[:, 0] = 1.0  # one row down
    out = deform_unfold(x, off, 1)[:, :, 0]
    expected = torch.zeros_like(x)
    expected[:, :, :-1] = x[:, :, 1:]
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("g,p", [(1, 1), (2, 1), (2, 4), (4, 3)])
@pytest.mark.parametrize("k,d", [(3, 1), (3, 2), (1, 1)])
def test_window_aggregate_naive(g, p, k, d):
    x = torch.randn(2, 4, 4, 5, dtype=D)
    wts = torch.randn(2, g, k * k, p, 4, 5, dtype=D)
    expected = naive_aggregate(x, wts, k, d)
    torch.testing.assert_close(window_aggregate(x, wts, k, d), expected)
    with reference_attention():
        torch.testing.assert_close(window_aggregate(x, wts, k, d), expected)
    if p == 1:
        torch.testing.assert_close(window_aggregate(x, wts[:, :, :, 0], k, d), expected[:, :, 0])


def test_aggregate_columns_naive_and_reference():
    cols = torch.randn(2, 6, 9, 3, 4, dtype=D)
    wts = torch.randn(2, 3, 9, 3, 4, dtype=D)
    expected = torch.zeros(2, 6, 3, 4, dtype=D)
    for c in range(6):
        for s in range(9):
            expected[:, c] += wts[:, c // 2, s] * cols[:, c, s]
    torch.testing.assert_close(aggregate_columns(cols, wts), expected)
    with reference_attention():
        torch.testing.assert_close(aggregate_columns(cols, wts), expected)


def test_window_aggregate_equals_unfold_then_columns():
    x = torch.randn(1, 8, 7, 13)
    wts = torch.softmax(torch.randn(1, 2, 25, 7, 13), dim=2)
    a = window_aggregate(x, wts, 5, 2)
    b = aggregate_columns(unfold_window(x, 5, 2), wts)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_counted_macs():
    x = torch.randn(1, 8, 7, 13)
    w5 = torch.randn(1, 2, 9, 7, 13)
    w6 = torch.randn(1, 2, 9, 4, 7, 13)
    assert count_macs(window_aggregate, x, w5, 3) == 8 * 9 * 7 * 13
    assert count_macs(window_aggregate, x, w6, 3) == 8 * 9 * 4 * 7 * 13
    assert count_macs(aggregate_columns, unfold_window(x, 3), w5) == 8 * 9 * 7 * 13


def test_gradcheck_helpers():
    x = torch.randn(1, 2, 3, 4, dtype=D, requires_grad=True)
    off = (torch.rand(1, 18, 3, 4, dtype=D) * 0.8 + 0.1).requires_grad_()  # away from integer kinks
    wts = torch.randn(1, 2, 9, 2, 3, 4, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, o: deform_unfold(a, o, 3, 1), (x, off))
    assert torch.autograd.gradcheck(lambda a, w: window_aggregate(a, w, 3, 1), (x, wts))
    with reference_attention():
        assert torch.autograd.gradcheck(lambda a, w: window_aggregate(a, w, 3, 1), (x, wts))


def test_low_precision_and_channels_last():
    x = torch.randn(1, 4, 5, 6)
    wts = torch.softmax(torch.randn(1, 2, 9, 5, 6), dim=2)
    ref = window_aggregate(x, wts, 3)
    out = window_aggregate(x.to(torch.bfloat16), wts, 3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(window_aggregate(x.to(memory_format=torch.channels_last), wts, 3), ref)
    off = torch.randn(1, 18, 5, 6)
    a = deform_unfold(x.to(torch.float16), off, 3)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, deform_unfold(x, off, 3), atol=1e-2, rtol=1e-2)


def test_compile_fullgraph():
    x = torch.randn(1, 4, 5, 6)
    off = torch.randn(1, 18, 5, 6)
    wts = torch.randn(1, 2, 9, 5, 6)

    def f(a, o, w):
        return aggregate_columns(deform_unfold(a, o, 3, 2), w) + window_aggregate(a, w, 3, 2)

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, off, wts), f(x, off, wts))


def test_errors():
    x = torch.randn(1, 4, 5, 6)
    with pytest.raises(ValueError, match="odd"):
        unfold_window(x, 2)
    with pytest.raises(ValueError, match="dilation"):
        unfold_window(x, 3, 0)
    with pytest.raises(ValueError, match="4-D"):
        unfold_window(x[0], 3)
    with pytest.raises(ValueError, match="offsets must have shape"):
        deform_unfold(x, torch.zeros(1, 9, 5, 6), 3)
    with pytest.raises(ValueError, match="weights must have shape"):
        window_aggregate(x, torch.zeros(1, 2, 8, 5, 6), 3)
    with pytest.raises(ValueError, match="cannot be split into 3"):
        window_aggregate(x, torch.zeros(1, 3, 9, 5, 6), 3)
    with pytest.raises(ValueError, match="weights must have shape"):
        aggregate_columns(unfold_window(x, 3), torch.zeros(1, 2, 9, 5, 5))


@pytest.mark.parametrize("k, d, phases, groups, per_group", [
    (3, 1, 1, 3, 2), (5, 2, 2, 3, 2), (1, 1, 1, 3, 2),
    (3, 1, 1, 1, 40), (3, 2, 2, 2, 33),  # more than 32 channels per group: the vecdot branch
])
def test_window_aggregate_backward_equals_plain_autograd(k, d, phases, groups, per_group):
    """ShiftedSum's own backward (the fast path under autograd) against autograd through the plain sum."""
    from segattn.ops import sampling

    x = torch.randn(2, groups * per_group, 5, 7, dtype=D, requires_grad=True)
    wts = torch.randn(2, groups, k * k, phases, 5, 7, dtype=D, requires_grad=True)
    cot = torch.randn(2, groups, per_group, phases, 5, 7, dtype=D)
    args = (x.reshape(2, groups, per_group, 5, 7), wts, k, d)
    fast = torch.autograd.grad((sampling.ShiftedSum.apply(*args) * cot).sum(), (x, wts))
    plain = torch.autograd.grad((sampling._shifted_sum_plain(*args) * cot).sum(), (x, wts))
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    (gx,) = torch.autograd.grad((sampling.ShiftedSum.apply(*args) * cot).sum(), x)  # one input only
    torch.testing.assert_close(gx, plain[0], atol=1e-12, rtol=0)
    assert window_aggregate(x, wts, k, d).grad_fn is not None
