"""DGMN: zero offsets == fixed (nn.Unfold) neighbourhoods, the message formula, weights, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import segattn
from segattn.ops.attention import reference_attention
from tests.helpers import naive_bilinear, perturb_

D = torch.float64


def build(c=16, **kw):
    torch.manual_seed(0)
    return perturb_(segattn.create_module("dgmn", c, **kw)).to(D).eval()


def zero_offsets_(m):
    with torch.no_grad():
        for conv in m.offset_convs:
            conv.weight.zero_()
    return m


def expected_from_unfold(m, x, weights):
    """x + fuse([xd; sum_s w_s * nn.Unfold(xd)_s]) with the module's own layers and weights."""
    xd = m.reduce(x)
    b, cr, h, w = xd.shape
    k = m.kernel_size
    msgs = [xd]
    for d in m.dilations:
        cols = nn.Unfold(k, dilation=d, padding=d * (k - 1) // 2)(xd).view(
            b, m.groups, cr // m.groups, k * k, h, w
        )
        msgs.append((cols * weights[f"weights_d{d}"].unsqueeze(2)).sum(3).reshape(b, cr, h, w))
    return x + m.fuse(torch.cat(msgs, 1))


def test_defaults_and_fresh_module_samples_fixed_grid():
    m = segattn.create_module("dgmn", 64)
    assert (m.groups, m.kernel_size, m.dilations, m.mid_channels) == (4, 3, (1, 4, 8, 12), 16)
    assert m.deformable and m.affinity
    assert all(torch.count_nonzero(c.weight) == 0 for c in m.offset_convs)


@pytest.mark.parametrize("size", [(7, 13), (1, 1), (5, 4)])
def test_zero_offsets_equal_fixed_neighbourhood(size):
    deform = zero_offsets_(build(16))
    fixed = segattn.create_module("dgmn", 16, deformable=False).to(D).eval()
    missing, unexpected = fixed.load_state_dict(deform.state_dict(), strict=False)
    assert not missing and all(k.startswith("offset_convs") for k in unexpected)
    x = torch.randn(2, 16, *size, dtype=D)
    y, att = deform(x, return_attention=True)
    assert all(torch.count_nonzero(att[f"offsets_d{d}"]) == 0 for d in deform.dilations)
    torch.testing.assert_close(y, fixed(x), atol=1e-10, rtol=0)
    torch.testing.assert_close(y, expected_from_unfold(deform, x, att), atol=1e-10, rtol=0)


def test_nonzero_offsets_change_output():
    m = build(16)
    x = torch.randn(1, 16, 6, 7, dtype=D)
    y = m(x)
    torch.testing.assert_close(y, m(x))
    assert not torch.allclose(y, zero_offsets_(m)(x))


def test_message_formula_with_offsets():
    """One dilation, 2 groups of 2 channels: against explicit bilinear sampling of Xd."""
    m = build(16, groups=2, dilations=(2,))
    x = torch.randn(1, 16, 4, 5, dtype=D)
    _, att = m(x, return_attention=True)
    xd = m.reduce(x)
    off, w = att["offsets_d2"], att["weights_d2"]
    msg = torch.zeros_like(xd)
    for i in range(4):
        for j in range(5):
            for s in range(9):
                py = i + (s // 3 - 1) * 2 + off[0, 2 * s, i, j].item()
                px = j + (s % 3 - 1) * 2 + off[0, 2 * s + 1, i, j].item()
                sample = naive_bilinear(xd[0], py, px)
                msg[0, :, i, j] += w[0, :, s, i, j].repeat_interleave(2) * sample
    expected = x + m.fuse(torch.cat([xd, msg], 1))
    torch.testing.assert_close(m(x), expected)


def test_weights_are_softmax_times_sigmoid():
    m = build(16)
    x = torch.randn(2, 16, 5, 6, dtype=D)
    _, att = m(x, return_attention=True)
    for d in m.dilations:
        w = att[f"weights_d{d}"]
        assert w.shape == (2, 4, 9, 5, 6)
        assert (w > 0).all() and (w.sum(2) < 1 + 1e-12).all()
    m2 = build(16, affinity=False)
    _, att2 = m2(x, return_attention=True)
    torch.testing.assert_close(att2["weights_d1"].sum(2), torch.ones(2, 4, 5, 6, dtype=D))


def test_reference_path_equals_fast_path():
    m = build(16)
    x = torch.randn(2, 16, 7, 5, dtype=D)
    fast = m(x)
    with reference_attention():
        torch.testing.assert_close(m(x), fast)


def test_compile_and_export():
    m = build(16).float()
    x = torch.randn(1, 16, 5, 6)
    with torch.no_grad():
        ref = m(x)
        torch.testing.assert_close(torch.compile(m, fullgraph=True, backend="eager")(x), ref)
    torch.testing.assert_close(torch.export.export(m, (x,)).module()(x), ref, atol=1e-5, rtol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="divisible by groups"):
        segattn.create_module("dgmn", 16, groups=3)
    with pytest.raises(ValueError, match="kernel_size must be a positive odd"):
        segattn.create_module("dgmn", 16, kernel_size=2)
    with pytest.raises(ValueError, match="dilations"):
        segattn.create_module("dgmn", 16, dilations=())
    with pytest.raises(ValueError, match="distinct"):
        segattn.create_module("dgmn", 16, dilations=(1, 1))


def test_after3x3_block_is_the_released_configs_redynamicweightscat33():
    """No reduction, no fusion convs, gamma_d = 1, predictors over all C channels (G K + K logits)."""
    m = segattn.create_module("dgmn", 16, block="after3x3")
    assert isinstance(m.reduce, torch.nn.Identity) and m.fuse is None and m.mid_channels == 16
    assert m.gammas.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert [p.weight.shape for p in m.predictors] == [torch.Size([4 * 9 + 9, 16, 3, 3])] * 4
    assert all(torch.count_nonzero(c.weight) == 0 for c in m.offset_convs)
    cat11 = segattn.create_module("dgmn", 16)
    assert cat11.block == "cat11" and cat11.mid_channels == 4 and cat11.gammas is None


def test_after3x3_weights_are_raw_filters_times_softmax_affinity():
    torch.manual_seed(0)
    m = perturb_(segattn.create_module("dgmn", 8, block="after3x3", groups=2)).double().eval()
    x = torch.randn(1, 8, 5, 6, dtype=torch.float64)
    _, f = m(x, return_attention=True)
    w = f["weights_d1"]  # (B, G, K, H, W): not a softmax over the samples (raw filters), sign-mixed
    assert (w < 0).any() and not torch.allclose(w.sum(2), torch.ones_like(w.sum(2)))
    # the ratio of two groups' weights is the ratio of their raw filters: the affinity is shared
    cols = m.neighbourhoods(x, 0)[0]
    logits = torch.nn.functional.conv2d(cols.reshape(1, 72, 5, 6), m.predictors[0].weight.reshape(27, 72, 1, 1))
    att = torch.softmax(logits[:, 18:], dim=1)
    torch.testing.assert_close(w[0, 1], logits[0, 9:18] * att[0], rtol=1e-12, atol=1e-12)


def test_after3x3_fresh_offsets_equal_fixed_neighbourhoods_and_bad_arguments():
    torch.manual_seed(0)
    deform = segattn.create_module("dgmn", 8, block="after3x3", groups=2).double().eval()
    torch.manual_seed(0)
    fixed = segattn.create_module("dgmn", 8, block="after3x3", groups=2, deformable=False).double().eval()
    fixed.load_state_dict({k: v for k, v in deform.state_dict().items() if not k.startswith("offset_convs")})
    x = torch.randn(2, 8, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(deform(x), fixed(x), rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="has no reduction"):
        segattn.create_module("dgmn", 8, block="after3x3", reduction=4)
    with pytest.raises(ValueError, match="'cat11'.*'after3x3'"):
        segattn.create_module("dgmn", 8, block="after1x1")
