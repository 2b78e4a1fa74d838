"""CGNL: spec 1.9 identities (linear = quadratic, Taylor remainder, simplified beta, P = 0)."""

from __future__ import annotations

import math

import pytest
import torch

import segattn
from segattn.modules.cgnl import compact_kernel, taylor_coefficients
from segattn.ops.flops import count_macs
from tests.helpers import perturb_

D = torch.float64


def explicit(theta, phi, g, f):
    """``(f(theta_i, phi_j))_{ij} g`` with the L x L kernel matrix materialised."""
    return torch.matmul(f(theta.unsqueeze(-1), phi.unsqueeze(-2)), g.unsqueeze(-1)).squeeze(-1)


def test_dot_linear_equals_quadratic():
    theta, phi, g = (torch.randn(2, 3, 40, dtype=D) for _ in range(3))
    y, att = compact_kernel(theta, phi, g, "dot")
    ref = explicit(theta, phi, g, lambda a, b: a * b)
    torch.testing.assert_close(y, ref, atol=1e-10, rtol=0)
    assert att.shape == (2, 3, 1)
    ys, _ = compact_kernel(theta, phi, g, "dot", use_scale=True)
    torch.testing.assert_close(ys, ref / math.sqrt(40), atol=1e-10, rtol=0)


def test_module_output_equals_quadratic_form():
    torch.manual_seed(1)
    m = perturb_(segattn.create_module("cgnl", 16)).double().eval()
    x = torch.randn(2, 16, 5, 7, dtype=D)
    out, f = m(x, return_attention=True)
    y = explicit(f["theta"], f["phi"], f["g"], lambda a, b: a * b).reshape(2, m.planes, 5, 7)
    torch.testing.assert_close(out, x + m.norm(m.z(y)), atol=1e-10, rtol=0)


@pytest.mark.parametrize("order", [0, 1, 2, 3, 5])
def test_gaussian_truncation_within_lagrange_remainder(order):
    gamma = 0.05
    theta, phi, g = torch.randn(1, 2, 30, dtype=D), torch.randn(1, 2, 30, dtype=D), torch.randn(1, 2, 30, dtype=D)
    y, _ = compact_kernel(theta, phi, g, "gaussian", order, gamma, exact_beta=True)
    exact = explicit(theta, phi, g, lambda a, b: torch.exp(-gamma * (a - b) ** 2))
    # |exp(u) - sum_{p<=P} u^p/p!| <= |u|^{P+1}/(P+1)! e^{max(u, 0)}, u = 2 gamma theta_i phi_j
    u = 2 * gamma * theta.unsqueeze(-1) * phi.unsqueeze(-2)
    beta = torch.exp(-gamma * (theta.unsqueeze(-1) ** 2 + phi.unsqueeze(-2) ** 2))
    remainder = u.abs() ** (order + 1) / math.factorial(order + 1) * torch.exp(u.clamp(min=0))
    bound = (beta * remainder * g.abs().unsqueeze(-2)).sum(-1)
    err = (y - exact).abs()
    assert (err <= bound + 1e-12).all()
    assert err.max() > 1e-3 * bound.max()  # the bound is not vacuous: a real truncation error exists


def test_gaussian_kernel_error_shrinks_with_order():
    gamma, n = 0.05, 25
    theta, phi = torch.randn(n, dtype=D), torch.randn(n, dtype=D)
    # g = one-hot columns: row j of y is the kernel column f(theta_., phi_j)
    rows = (theta.expand(n, n), phi.expand(n, n), torch.eye(n, dtype=D))
    exact = torch.exp(-gamma * (theta.unsqueeze(0) - phi.unsqueeze(1)) ** 2)
    errs = [(compact_kernel(*rows, "gaussian", p, gamma, True)[0] - exact).abs().max() for p in range(5)]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    assert errs[-1] < 1e-2


def test_simplified_kernel_is_series_with_constant_beta():
    gamma, order = 0.03, 3
    theta, phi, g = (torch.randn(2, 2, 20, dtype=D) for _ in range(3))
    y, att = compact_kernel(theta, phi, g, "gaussian", order, gamma, exact_beta=False)
    beta = math.exp(-2 * gamma)
    series = sum(
        c * beta * explicit(theta, phi, g, lambda a, b, p=p: a**p * b**p)
        for p, c in enumerate(taylor_coefficients(order, gamma))
    )
    torch.testing.assert_close(y, series, atol=1e-12, rtol=0)
    assert att.shape == (2, 2, order + 1)
    y_exact, _ = compact_kernel(theta, phi, g, "gaussian", order, gamma, exact_beta=True)
    assert (y - y_exact).abs().max() > 1e-6  # the switch changes the result


def test_order_zero_is_broadcast_sum():
    gamma = 0.02
    theta, phi, g = (torch.randn(2, 3, 17, dtype=D) for _ in range(3))
    y, _ = compact_kernel(theta, phi, g, "gaussian", 0, gamma)
    expected = math.exp(-2 * gamma) * g.sum(-1, keepdim=True).expand_as(y)
    torch.testing.assert_close(y, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kw", [{"kernel": "gaussian"}, {"kernel": "gaussian", "exact_beta": True, "order": 2}])
def test_gaussian_module_gradcheck_flops_and_odd_sizes(kw):
    torch.manual_seed(0)
    m = perturb_(segattn.create_module("cgnl", 16, gamma=0.01, **kw)).double().eval()
    x = torch.randn(1, 16, 3, 5, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), fast_mode=True)
    assert m(torch.randn(2, 16, 1, 1, dtype=D)).shape == (2, 16, 1, 1)
    assert m.flops(7, 13) == count_macs(m.float(), torch.randn(1, 16, 7, 13))


def test_identity_at_init():
    m = segattn.create_module("cgnl", 16).eval()
    x = torch.randn(2, 16, 6, 5)
    torch.testing.assert_close(m(x), x)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kernel"):
        segattn.create_module("cgnl", 16, kernel="poly")
    with pytest.raises(ValueError, match="groups"):
        segattn.create_module("cgnl", 12, groups=8)
    with pytest.raises(ValueError, match="order"):
        segattn.create_module("cgnl", 16, kernel="gaussian", order=-1)


@pytest.mark.parametrize("kernel", ["dot", "gaussian"])
def test_compile_and_export(kernel):
    m = perturb_(segattn.create_module("cgnl", 16, kernel=kernel)).eval()
    x = torch.randn(2, 16, 5, 7)
    ref = m(x)
    torch.testing.assert_close(torch.compile(m, fullgraph=True, backend="eager")(x), ref)
    torch.testing.assert_close(torch.export.export(m, (x,)).module()(x), ref)


@pytest.mark.parametrize("exact_beta", [False, True])
def test_gaussian_use_scale_divides_by_sqrt_length(exact_beta):
    """Official SpatialCGNLx: ``att.div((c*h*w)**0.5)`` for the Gaussian kernel too (was ignored)."""
    gamma, order = 0.05, 3
    theta, phi, g = (torch.randn(2, 3, 40, dtype=D) for _ in range(3))
    coeff = taylor_coefficients(order, gamma)

    def taylor(a, b):
        beta = torch.exp(-gamma * (a * a + b * b)) if exact_beta else math.exp(-2 * gamma)
        return beta * sum(c * (a * b) ** p for p, c in enumerate(coeff))

    ref = explicit(theta, phi, g, taylor)
    y, _ = compact_kernel(theta, phi, g, "gaussian", order, gamma, exact_beta=exact_beta)
    ys, _ = compact_kernel(theta, phi, g, "gaussian", order, gamma, exact_beta=exact_beta, use_scale=True)
    torch.testing.assert_close(y, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(ys, ref / math.sqrt(40), atol=1e-10, rtol=0)
