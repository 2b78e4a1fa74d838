"""CARAFE: spec 1.10 identities, the mmcv reassembly formula as a loop, memory-lean reassembly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import segattn
from segattn.bench.tensors import LargestTensorRecorder
from segattn.ops.attention import reference_attention
from tests.helpers import perturb_

D = torch.float64


def build(c=8, **kw):
    torch.manual_seed(0)
    return perturb_(segattn.create_upsampler("carafe", c, **kw)).to(D).eval()


def naive_carafe(x, kernels, k, s):
    """mmcv's formula: Y[c, ph, pw] = sum W[g, t, ph, pw] X[c, ph//s + dy, pw//s + dx], zero padding."""
    b, c, h, w = x.shape
    g = kernels.shape[1]
    r = (k - 1) // 2
    out = torch.zeros(b, c, s * h, s * w, dtype=x.dtype)
    for ch in range(c):
        gi = ch // (c // g)
        for ph in range(s * h):
            for pw in range(s * w):
                for dy in range(-r, r + 1):
                    for dx in range(-r, r + 1):
                        yy, xx = ph // s + dy, pw // s + dx
                        if 0 <= yy < h and 0 <= xx < w:
                            t = (dy + r) * k + (dx + r)
                            out[:, ch, ph, pw] += kernels[:, gi, t, ph, pw] * x[:, ch, yy, xx]
    return out


@pytest.mark.parametrize("s,k,g", [(2, 5, 1), (2, 3, 2), (3, 3, 4)])
def test_matches_mmcv_formula(s, k, g):
    m = build(8, scale_factor=s, up_kernel=k, up_group=g)
    x = torch.randn(2, 8, 3, 4, dtype=D)
    y, att = m(x, return_attention=True)
    kernels = att["kernels"]
    assert kernels.shape == (2, g, k * k, s * 3, s * 4)
    torch.testing.assert_close(kernels.sum(2), torch.ones(2, g, s * 3, s * 4, dtype=D))
    torch.testing.assert_close(y, naive_carafe(x, kernels, k, s))


def test_kernel_layout_is_pixel_shuffle_of_encoder():
    """The softmax is over the k^2 axis of view(pixel_shuffle(Z), (B, G, k^2, sH, sW)) (mmcv order)."""
    m = build(8, scale_factor=2, up_kernel=3, up_group=2)
    x = torch.randn(1, 8, 3, 5, dtype=D)
    z = m.encoder(m.compressor(x))
    expected = torch.softmax(F.pixel_shuffle(z, 2).view(1, 2, 9, 6, 10), dim=2)
    torch.testing.assert_close(m(x, return_attention=True)[1]["kernels"], expected)


@pytest.mark.parametrize("s,k,g", [(2, 3, 2), (3, 3, 1), (2, 5, 2)])
def test_one_hot_kernels_select_their_tap(s, k, g):
    """Each (group, sub-pixel phase) gets a kernel peaked at its own tap, so the output at that phase is
    the source shifted by that tap: this sees the phase order, the group mapping and the tap layout
    (a k = 1 kernel sees none of them)."""
    c, kk = 4, k * k
    m = build(c, scale_factor=s, up_kernel=k, up_group=g)
    tap = {(gi, p): (3 * gi + 5 * p + 1) % kk for gi in range(g) for p in range(s * s)}
    with torch.no_grad():
        m.encoder.weight.zero_()
        m.encoder.bias.zero_()
        for (gi, p), t in tap.items():
            m.encoder.bias[(gi * kk + t) * s * s + p] = 60.0  # channel of Z in pixel_shuffle order
    x = torch.randn(1, c, 4, 5, dtype=D)
    y = m(x)
    r = (k - 1) // 2
    padded = F.pad(x, (r, r, r, r))
    for ch in range(c):
        gi = ch // (c // g)
        for p in range(s * s):
            t = tap[(gi, p)]
            dy, dx = t // k, t % k
            expected = padded[0, ch, dy : dy + 4, dx : dx + 5]
            torch.testing.assert_close(y[0, ch, p // s :: s, p % s :: s], expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("k,g", [(5, 1), (3, 2)])
def test_equal_logits_is_box_average_then_nearest(k, g):
    m = build(8, up_kernel=k, up_group=g)
    with torch.no_grad():
        m.encoder.weight.zero_()
        m.encoder.bias.fill_(0.7)
    x = torch.randn(2, 8, 6, 7, dtype=D)
    box = F.avg_pool2d(x, k, stride=1, padding=(k - 1) // 2, count_include_pad=True)
    torch.testing.assert_close(m(x), F.interpolate(box, scale_factor=2, mode="nearest"))


def test_reference_path_equals_fast_path():
    m = build(8, up_group=2)
    x = torch.randn(2, 8, 7, 5, dtype=D)
    fast = m(x)
    with reference_attention():
        ref = m(x)
    torch.testing.assert_close(fast, ref)


def test_no_k2_copy_of_upsampled_map():
    """The largest tensor alive in forward is far below k^2 times the upsampled map."""
    m = segattn.create_upsampler("carafe", 16).eval()  # k_up = 5, s = 2
    x = torch.randn(1, 16, 24, 24)
    with torch.no_grad(), LargestTensorRecorder() as rec:
        m(x)
    upsampled = 16 * 48 * 48
    assert rec.largest <= 2 * upsampled, rec.largest_op


def test_default_config_and_errors():
    m = segattn.create_upsampler("carafe", 256)
    assert (m.scale_factor, m.up_kernel, m.up_group, m.encoder_kernel, m.compressed_channels) == (
        2,
        5,
        1,
        3,
        64,
    )
    assert m.encoder.out_channels == 4 * 25
    with pytest.raises(ValueError, match="up_kernel must be a positive odd"):
        segattn.create_upsampler("carafe", 8, up_kernel=4)
    with pytest.raises(ValueError, match="divisible by up_group"):
        segattn.create_upsampler("carafe", 8, up_group=3)
    with pytest.raises(ValueError, match="scale_factor"):
        segattn.create_upsampler("carafe", 8, scale_factor=0)
    with pytest.raises(TypeError, match="accepted"):
        segattn.create_upsampler("carafe", 8, scale=2)
    assert "carafe" not in segattn.list_modules()
