"""GaussianAnchorMapper's nodes against the plain per-pixel sum, including anchors with almost no mass."""

from __future__ import annotations

import torch

from segattn.lowrank import GaussianAnchorMapper


def test_nodes_exact_for_anchors_below_eps():
    torch.manual_seed(0)
    mapper = GaussianAnchorMapper(4, 3).double()
    with torch.no_grad():
        mapper.anchors[:, 2] = 6.0  # far from every pixel: total assignment ~ 1e-20 << eps
        mapper.log_sigma.normal_(0.0, 0.2)
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    res = mapper(x)
    xs = x.flatten(2).transpose(1, 2)  # (B, N, C)
    w, sigma = mapper.anchors.T, mapper.log_sigma.exp().T  # (K, C)
    resid = (xs[:, :, None, :] - w) / sigma  # (B, N, K, C)
    q = torch.softmax(-0.5 * (resid**2).sum(-1), dim=2)  # (B, N, K)
    qbar = q / (1e-6 + q.sum(1, keepdim=True))
    assert q.sum(1)[:, 2].max() < 1e-6  # the case the exact form is for
    z = torch.einsum("bnk,bnkc->bck", qbar, resid)
    torch.testing.assert_close(res.nodes, z, atol=1e-12, rtol=1e-10)
    weight = torch.randn_like(z)
    (g,) = torch.autograd.grad((res.nodes * weight).sum(), x)
    (g_ref,) = torch.autograd.grad((z * weight).sum(), x)
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=1e-10)
