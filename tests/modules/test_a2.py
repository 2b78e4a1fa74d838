"""A2 double attention: equivalence with one EM iteration (spec 1.3), rank (spec 1.2), factors, cost."""

from __future__ import annotations

import pytest
import torch

import segattn
from segattn.modules.a2 import DoubleAttention
from segattn.modules.ema import EMAttention
from segattn.ops.flops import count_macs

D = torch.float64
C, K, H, W = 16, 8, 5, 10  # N = 50


def set_conv(conv: torch.nn.Conv2d, weight: torch.Tensor) -> None:
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(*weight.shape, 1, 1))
        if conv.bias is not None:
            conv.bias.zero_()


def a2_as_em(mu0: torch.Tensor, log_softmax: bool) -> DoubleAttention:
    """A2 with A = X (phi = I), B = V = mu0^T X (theta = rho = mu0^T, no bias)."""
    a2 = DoubleAttention(C, mid_channels=C, num_descriptors=K, gather_log_softmax=log_softmax).double().eval()
    set_conv(a2.phi, torch.eye(C, dtype=D))
    set_conv(a2.block.mapper.proj, mu0.T)
    set_conv(a2.block.reverse.proj, mu0.T)
    return a2


def em_one_iteration(mu0: torch.Tensor) -> EMAttention:
    """EMANet unit with T = 1, no l2-normalisation, eps = 0, bases mu0, conv_in = identity."""
    ema = EMAttention(C, num_bases=K, num_stages=1, l2norm=False, eps=0.0).double().eval()
    set_conv(ema.conv_in, torch.eye(C, dtype=D))
    ema.block.mapper.bases.copy_(mu0)
    return ema


def em_reconstruction(ema: EMAttention, x: torch.Tensor) -> torch.Tensor:
    return ema.block(ema.conv_in(x))


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, C, H, W, generator=g, dtype=D), torch.randn(C, K, generator=g, dtype=D)


def test_a2_with_log_softmax_gather_equals_one_em_iteration(data):
    x, mu0 = data
    a2_out = a2_as_em(mu0, log_softmax=True).reconstruct(x)
    em_out = em_reconstruction(em_one_iteration(mu0), x)
    assert (a2_out - em_out).abs().max().item() < 1e-10
    # and the EM side is the spec's closed form
    xf = x.reshape(C, H * W)
    z = torch.softmax(xf.T @ mu0, dim=1)
    mu1 = xf @ (z / z.sum(0))
    torch.testing.assert_close(em_out.reshape(C, H * W), mu1 @ z.T, atol=1e-12, rtol=0)


def test_plain_a2_is_not_one_em_iteration_except_for_constant_images(data):
    x, mu0 = data
    plain = a2_as_em(mu0, log_softmax=False)
    ema = em_one_iteration(mu0)
    assert (plain.reconstruct(x) - em_reconstruction(ema, x)).abs().max().item() > 1e-2
    constant = x[:, :, :1, :1].expand(1, C, H, W).contiguous()  # identical columns
    diff = (plain.reconstruct(constant) - em_reconstruction(ema, constant)).abs().max().item()
    assert diff < 1e-10


@pytest.mark.parametrize("n", [3, 6])
def test_reconstruction_is_the_explicit_operator(n):
    torch.manual_seed(0)
    a2 = DoubleAttention(C, mid_channels=4, num_descriptors=n).double().eval()
    x = torch.randn(1, C, 7, 9, dtype=D)
    z, f = a2.reconstruct(x, return_factors=True)
    eye = torch.eye(63, dtype=D).reshape(1, 63, 7, 9)
    operator = a2.block(x, value=eye).reshape(63, 63).T  # feed identity value maps
    torch.testing.assert_close(operator, f["reverse"][0] @ f["map"][0])
    torch.testing.assert_close(operator.sum(1), torch.ones(63, dtype=D))  # row-stochastic
    assert (operator >= 0).all()
    torch.testing.assert_close(z.reshape(4, 63), a2.phi(x).reshape(4, 63) @ operator.T)


def test_factors_are_normalised():
    a2 = segattn.create_module("a2", C).eval()
    _, f = a2(torch.randn(2, C, 6, 7), return_attention=True)
    torch.testing.assert_close(f["map"].sum(2), torch.ones(2, 4))  # gather: softmax over pixels
    torch.testing.assert_close(f["reverse"].sum(2), torch.ones(2, 42))  # distribute: softmax over n


@pytest.mark.parametrize("kw", [{}, {"mid_channels": 3, "num_descriptors": 5}, {"gather_log_softmax": True}])
def test_flops_odd_sizes(kw):
    a2 = DoubleAttention(C, **kw).eval()
    for size in [(1, 1), (5, 11)]:
        assert a2.flops(*size) == count_macs(a2, torch.randn(1, C, *size))


def test_gradcheck_log_softmax_variant():
    a2 = DoubleAttention(6, gather_log_softmax=True).double()
    x = torch.randn(1, 6, 3, 3, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(a2, (x,), fast_mode=True)
