"""GloRe unit: reasoning-free operator (spec 1.2 test 3), graph conv formula, normalize, init, cost."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import segattn
from segattn.modules.glore import GloRe
from segattn.ops.flops import count_macs
from tests.helpers import perturb_

D = torch.float64
C = 16


def without_reasoning(m: GloRe) -> GloRe:
    """A_g = 0 (weights and bias), W_g = I, ReLU removed."""
    r = m.block.reasoner
    with torch.no_grad():
        r.node_conv.weight.zero_()
        r.node_conv.bias.zero_()
        r.channel_conv.weight.copy_(torch.eye(r.channels, dtype=D)[:, :, None])
    r.act = nn.Identity()
    return m


def test_without_reasoning_operator_is_symmetric_psd():
    torch.manual_seed(0)
    m = without_reasoning(GloRe(C).double().eval())
    x = torch.randn(1, C, 7, 9, dtype=D)
    y, f = m.reconstruct(x, return_factors=True)
    b = m.block.mapper.proj(x).reshape(m.num_nodes, 63)
    operator = f["reverse"][0] @ f["map"][0]
    torch.testing.assert_close(operator, b.T @ b)
    xs = m.conv_state(x).reshape(m.state_channels, 63)
    torch.testing.assert_close(y.reshape(m.state_channels, 63), xs @ b.T @ b)
    torch.testing.assert_close(operator, operator.T)
    assert torch.linalg.eigvalsh(operator).min() > -1e-10


def test_with_reasoning_matches_formula():
    torch.manual_seed(0)
    m = GloRe(C, state_channels=6, num_nodes=3).double().eval()
    perturb_(m)
    x = torch.randn(2, C, 5, 4, dtype=D)
    xs = m.conv_state(x).reshape(2, 6, 20)
    b = m.block.mapper.proj(x).reshape(2, 3, 20)
    v = xs @ b.transpose(1, 2)
    a = m.block.reasoner.node_conv.weight[:, :, 0]
    ab = m.block.reasoner.node_conv.bias
    wg = m.block.reasoner.channel_conv.weight[:, :, 0]
    z = wg @ torch.relu(v + v @ a.T + ab)
    y = (z @ b).reshape(2, 6, 5, 4)
    torch.testing.assert_close(m(x), x + m.blocker(m.conv_extend(y)))


def test_normalize_divides_node_features_by_n():
    torch.manual_seed(0)
    m = without_reasoning(GloRe(C).double().eval())
    torch.manual_seed(0)
    mn = without_reasoning(GloRe(C, normalize=True).double().eval())
    x = torch.randn(1, C, 6, 5, dtype=D)
    torch.testing.assert_close(mn.reconstruct(x), m.reconstruct(x) / 30)


def test_zero_init_is_identity_and_switch():
    m = segattn.create_module("glore", C).train()
    x = torch.randn(2, C, 5, 5)
    torch.testing.assert_close(m(x), x)
    assert GloRe(C, zero_init=False).blocker.weight.abs().sum() > 0


@pytest.mark.parametrize("kw", [{}, {"state_channels": 5, "num_nodes": 7, "normalize": True}])
def test_flops_odd_sizes(kw):
    m = GloRe(C, **kw).eval()
    for size in [(1, 1), (5, 11)]:
        assert m.flops(*size) == count_macs(m, torch.randn(1, C, *size))


def test_small_channel_counts():
    m = GloRe(2).eval()
    assert m.state_channels == 1 and m.num_nodes == 1
    assert m(torch.randn(1, 2, 3, 3)).shape == (1, 2, 3, 3)
