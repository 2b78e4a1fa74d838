"""Local Relation: spec 1.10 (appearance off = depthwise conv with a softmax kernel), explicit formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import segattn
from segattn.ops.attention import reference_attention
from tests.helpers import perturb_

D = torch.float64


def build(c=16, **kw):
    torch.manual_seed(0)
    return perturb_(segattn.create_module("local_relation", c, **kw)).to(D).eval()


def test_defaults():
    m = segattn.create_module("local_relation", 64)
    assert (m.kernel_size, m.channel_sharing, m.groups, m.geo_hidden) == (7, 8, 8, 4)
    assert m.out_channels == 64


@pytest.mark.parametrize("k,m_share", [(7, 8), (3, 4), (5, 16)])
def test_appearance_off_is_depthwise_softmax_conv(k, m_share):
    m = build(16, kernel_size=k, channel_sharing=m_share)
    with torch.no_grad():
        m.query.weight.zero_()
        m.key.weight.zero_()
    x = torch.randn(2, 16, 7, 9, dtype=D)
    kernel = torch.softmax(m.geometry_prior(), dim=-1)  # (G, k^2)
    per_channel = kernel.repeat_interleave(m_share, dim=0).view(16, 1, k, k)
    expected = m.proj(F.conv2d(x, per_channel, padding=(k - 1) // 2, groups=16))
    torch.testing.assert_close(m(x), expected)


def test_explicit_formula_loop():
    k, share = 3, 4
    m = build(8, kernel_size=k, channel_sharing=share)
    x = torch.randn(1, 8, 4, 5, dtype=D)
    q, kk, geo = m.query(x)[0], m.key(x)[0], m.geometry_prior()
    y = torch.zeros(8, 4, 5, dtype=D)
    for i in range(4):
        for j in range(5):
            for g in range(2):
                logits, vals = [], []
                for s in range(k * k):
                    dy, dx = s // k - 1, s % k - 1
                    inside = 0 <= i + dy < 4 and 0 <= j + dx < 5
                    key = kk[g, i + dy, j + dx] if inside else 0.0
                    logits.append(q[g, i, j] * key + geo[g, s])
                    vals.append(
                        x[0, g * share : (g + 1) * share, i + dy, j + dx]
                        if inside
                        else torch.zeros(share, dtype=D)
                    )
                w = torch.softmax(torch.stack(logits), 0)
                y[g * share : (g + 1) * share, i, j] = (w[:, None] * torch.stack(vals)).sum(0)
    torch.testing.assert_close(m(x)[0], m.proj(y[None])[0])


def test_weights_normalised_and_reference_path():
    m = build(16, kernel_size=5)
    x = torch.randn(2, 16, 6, 7, dtype=D)
    y, att = m(x, return_attention=True)
    torch.testing.assert_close(att["weights"].sum(2), torch.ones(2, 2, 6, 7, dtype=D))
    assert att["geometry"].shape == (2, 25)
    with reference_attention():
        torch.testing.assert_close(m(x), y)


def test_weights_float32_under_bf16():
    m = build(16, kernel_size=3).to(torch.bfloat16)
    _, att = m(torch.randn(1, 16, 5, 5, dtype=torch.bfloat16), return_attention=True)
    assert att["weights"].dtype == torch.float32


def test_local_support():
    """An output pixel depends only on inputs within its k x k window."""
    m = build(16, kernel_size=3).float()
    x = torch.randn(1, 16, 9, 9, requires_grad=True)
    m(x)[0, :, 4, 4].sum().backward()
    support = x.grad.abs().sum(1)[0] > 0
    expected = torch.zeros(9, 9, dtype=torch.bool)
    expected[3:6, 3:6] = True
    assert torch.equal(support, expected)


def test_errors():
    with pytest.raises(ValueError, match="kernel_size must be a positive odd"):
        segattn.create_module("local_relation", 16, kernel_size=4)
    with pytest.raises(ValueError, match="channel_sharing must be a positive int dividing"):
        segattn.create_module("local_relation", 12, channel_sharing=8)
    m = segattn.create_module("local_relation", 16)
    with pytest.raises(ValueError, match="expects 16 input channels"):
        m(torch.randn(1, 8, 5, 5))


def test_compile_and_export():
    m = build(16, kernel_size=3).float()
    x = torch.randn(1, 16, 5, 6)
    with torch.no_grad():
        ref = m(x)
        torch.testing.assert_close(torch.compile(m, fullgraph=True, backend="eager")(x), ref)
    torch.testing.assert_close(torch.export.export(m, (x,)).module()(x), ref)
