"""GraphRep (Beyond Grids): spec 3.10 equations written out, tied maps and the rank bound."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import segattn
from segattn.lowrank import IdentityReasoner
from segattn.ops.flops import count_macs
from tests.helpers import perturb_

D = torch.float64


def build(**kw):
    torch.manual_seed(0)
    return perturb_(segattn.create_module("graphrep", 16, num_anchors=6, **kw)).double().eval()


def test_matches_spec_equations():
    m = build()
    x = torch.randn(2, 16, 5, 3, dtype=D)
    w, sigma = m.block.mapper.anchors, m.block.mapper.log_sigma.exp()  # (C, K)
    xf = x.flatten(2)  # (B, C, N)
    scaled = (xf.unsqueeze(-1) - w.unsqueeze(1)) / sigma.unsqueeze(1)  # (B, C, N, K)
    q = torch.softmax(-0.5 * (scaled**2).sum(1), dim=2)  # (B, N, K) over anchors
    z = (scaled * q.unsqueeze(1)).sum(2) / q.sum(1).unsqueeze(1)  # (B, C, K), the paper's form
    # the mapper normalises over pixels with q / (1e-6 + sum q) (sum_i map_ki = 1 - O(1e-6 / sum q))
    # and takes z_k = sum_i map_ki (x_i - w_k) / sigma_k exactly
    z_eps = (scaled * (q / (1e-6 + q.sum(1, keepdim=True))).unsqueeze(1)).sum(2)
    assert (z - z_eps).abs().max() < 1e-2  # ~1e-3 here: anchors with a small total weight (reported)
    zn = F.normalize(z_eps, dim=1)
    adj = torch.softmax(zn.transpose(1, 2) @ zn, dim=2)  # (B, K, K)
    z_t = F.relu(m.block.reasoner.weight.weight[:, :, 0] @ (zn @ adj.transpose(1, 2)))
    expected = x + (z_t @ q.transpose(1, 2)).view_as(x)
    out, f = m(x, return_attention=True)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(f["reverse"], q, atol=1e-10, rtol=0)


def test_tied_maps_without_reasoning():
    m = build()
    m.block.reasoner = IdentityReasoner()
    x = torch.randn(1, 16, 6, 7, dtype=D)
    out, f = m(x, return_attention=True)
    rev, map_ = f["reverse"][0], f["map"][0]  # (N, K), (K, N)
    torch.testing.assert_close(rev.sum(1), torch.ones(42, dtype=D), atol=1e-12, rtol=0)
    torch.testing.assert_close(map_ / map_.sum(1, keepdim=True), (rev / rev.sum(0)).T, atol=1e-12, rtol=0)
    # reconstruction = q z with the vertex features z (no reasoning)
    torch.testing.assert_close((out - x).flatten(2)[0], f["nodes"][0] @ rev.T, atol=1e-12, rtol=0)


def test_anchor_count_sets_the_rank():
    m = build()
    m.block.reasoner = IdentityReasoner()
    x = torch.randn(1, 16, 8, 8, dtype=D)
    _, f = m(x, return_attention=True)
    assert f["map"].shape == (1, 6, 64) and f["reverse"].shape == (1, 64, 6)


def test_gradcheck_flops_odd_sizes():
    m = build(normalize_nodes=False)
    x = torch.randn(1, 16, 3, 5, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (x,), fast_mode=True)
    assert m(torch.randn(2, 16, 1, 1, dtype=D)).shape == (2, 16, 1, 1)
    assert m.flops(7, 13) == count_macs(m.float(), torch.randn(1, 16, 7, 13))


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_anchors"):
        segattn.create_module("graphrep", 16, num_anchors=0)
