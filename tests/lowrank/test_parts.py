"""Tests of the composable low-rank parts (segattn.lowrank): maps, normalisations, factors, MACs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segattn.lowrank import (
    EMMapper,
    GaussianAnchorMapper,
    GraphConvReasoner,
    GridPoolingMapper,
    IdentityReasoner,
    LowRankBlock,
    NodeAttentionReasoner,
    ProjectionMapper,
    ProjectionReverse,
    PyramidAnchorMapper,
    TransposeReverse,
    UpsampleReverse,
    call_step_hooks,
)
from segattn.ops.flops import count_macs

D = torch.float64


def one_hot_images(n: int, h: int, w: int) -> torch.Tensor:
    return torch.eye(n, dtype=D).reshape(n, 1, h, w)


@pytest.mark.parametrize("size", [(7, 13), (5, 5)])
@pytest.mark.parametrize("b", [1, 3, 6])
@pytest.mark.parametrize("align_corners", [False, True])
def test_pooling_grid_matrices_spec_1_2(size, b, align_corners):
    h, w = size
    n = h * w
    x = torch.randn(1, 4, h, w, dtype=D)
    block = LowRankBlock(GridPoolingMapper(b), None, UpsampleReverse(align_corners))
    y, f = block(x, return_factors=True)
    p, u = f["map"][0], f["reverse"][0]
    # P_b from pooling the N one-hot images, U_b from upsampling the b^2 one-hot grids
    p_ref = F.adaptive_avg_pool2d(one_hot_images(n, h, w), b).reshape(n, b * b).T
    u_ref = F.interpolate(one_hot_images(b * b, b, b), size=size, mode="bilinear", align_corners=align_corners)
    torch.testing.assert_close(p, p_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(u, u_ref.reshape(b * b, n).T, atol=1e-12, rtol=0)
    torch.testing.assert_close(p.sum(1), torch.ones(b * b, dtype=D), atol=1e-12, rtol=0)
    torch.testing.assert_close(u.sum(1), torch.ones(n, dtype=D), atol=1e-12, rtol=0)
    direct = F.interpolate(F.adaptive_avg_pool2d(x, b), size=size, mode="bilinear", align_corners=align_corners)
    torch.testing.assert_close(y, direct, atol=1e-12, rtol=0)
    torch.testing.assert_close((x.reshape(1, 4, n) @ (u @ p).T).reshape_as(x), direct, atol=1e-12, rtol=0)
    if b == 1:
        torch.testing.assert_close(u @ p, torch.full((n, n), 1.0 / n, dtype=D), atol=1e-12, rtol=0)


def test_pyramid_grid_map_stacks_bins():
    x = torch.randn(2, 3, 9, 7, dtype=D)
    res = GridPoolingMapper([1, 2, 3])(x)
    assert res.map.shape == (2, 14, 63) and res.grid is None
    torch.testing.assert_close(res.nodes, x.reshape(2, 3, 63) @ res.map.transpose(1, 2))
    with pytest.raises(ValueError, match="single pooling grid"):
        LowRankBlock(GridPoolingMapper([1, 2]), None, UpsampleReverse())(x)


@pytest.mark.parametrize("mode", ["softmax", "none", "mean", "l2", "sum"])
def test_projection_mapper_normalisation(mode):
    x = torch.randn(2, 5, 4, 6, dtype=D)
    value = torch.randn(2, 3, 4, 6, dtype=D)
    mapper = ProjectionMapper(5, 7, mode).double()
    if mode == "sum":
        mapper.proj = nn.Sequential(mapper.proj, nn.Softplus())
    res = mapper(x, value)
    logits = mapper.proj(x).reshape(2, 7, 24)
    expect = {
        "softmax": torch.softmax(logits, 2),
        "none": logits,
        "mean": logits / 24,
        "l2": logits / logits.norm(dim=2, keepdim=True),
        "sum": logits / (1e-6 + logits.sum(2, keepdim=True)),
    }[mode]
    torch.testing.assert_close(res.map, expect)
    torch.testing.assert_close(res.assignment, logits)
    torch.testing.assert_close(res.nodes, value.reshape(2, 3, 24) @ expect.transpose(1, 2))


def test_log_softmax_nodes_is_log_softmax_over_k():
    mapper = ProjectionMapper(4, 5, "softmax", log_softmax_nodes=True).double()
    x = torch.randn(1, 4, 3, 3, dtype=D)
    logits = mapper.proj(x).reshape(1, 5, 9)
    torch.testing.assert_close(mapper(x).map, torch.softmax(torch.log_softmax(logits, 1), 2))


@pytest.mark.parametrize("mode", ["softmax", "sigmoid", "l2"])
def test_projection_reverse(mode):
    x = torch.randn(2, 6, 5, 3, dtype=D)
    block = LowRankBlock(ProjectionMapper(6, 4), None, ProjectionReverse(6, 4, mode)).double()
    y, f = block(x, return_factors=True)
    rev = f["reverse"]
    logits = block.reverse.proj(x).reshape(2, 4, 15).transpose(1, 2)
    expect = {"softmax": torch.softmax(logits, 2), "sigmoid": torch.sigmoid(logits), "l2": F.normalize(logits, dim=2)}[mode]
    torch.testing.assert_close(rev, expect)
    if mode == "softmax":
        torch.testing.assert_close(rev.sum(2), torch.ones(2, 15, dtype=D))
    torch.testing.assert_close(y.reshape(2, 6, 15), f["nodes"] @ rev.transpose(1, 2))


def test_graph_conv_reasoner_formula():
    reasoner = GraphConvReasoner(5, 3, 4).double()
    v = torch.randn(2, 3, 5, dtype=D)
    a = reasoner.node_conv.weight[:, :, 0]
    b = reasoner.node_conv.bias
    w = reasoner.channel_conv.weight[:, :, 0]
    expect = w @ torch.relu(v + v @ a.T + b)
    torch.testing.assert_close(reasoner(v), expect)
    with pytest.raises(ValueError, match="expects nodes of shape"):
        reasoner(torch.randn(2, 3, 6, dtype=D))


def test_node_attention_reasoner_formula():
    v = torch.randn(2, 6, 5, dtype=D)
    zhat = F.normalize(v, dim=1)
    s = torch.softmax(zhat.transpose(1, 2) @ zhat, dim=2)
    torch.testing.assert_close(NodeAttentionReasoner()(v), v @ s.transpose(1, 2))


def test_gaussian_anchor_mapper_formula():
    mapper = GaussianAnchorMapper(3, 4).double()
    with torch.no_grad():
        mapper.log_sigma.normal_(0.0, 0.3)
    x = torch.randn(1, 3, 4, 5, dtype=D)
    xs = x.reshape(3, 20).T  # (N, C)
    w, sigma = mapper.anchors.T, mapper.log_sigma.exp().T  # (K, C)
    d2 = (((xs[:, None, :] - w[None]) / sigma[None]) ** 2).sum(-1)  # (N, K)
    q = torch.softmax(-0.5 * d2, dim=1)
    qbar = q / (1e-6 + q.sum(0))
    z = torch.einsum("nk,nkc->ck", qbar, (xs[:, None, :] - w[None]) / sigma[None])
    res = mapper(x)
    torch.testing.assert_close(res.assignment[0], q.T)
    torch.testing.assert_close(res.nodes[0], z, atol=1e-5, rtol=1e-5)  # eps in the normaliser


def test_pyramid_anchor_mapper():
    x = torch.randn(2, 4, 9, 10, dtype=D)
    res = PyramidAnchorMapper((1, 3))(x)
    anchors = torch.cat([F.adaptive_avg_pool2d(x, 1).reshape(2, 4, 1), F.adaptive_avg_pool2d(x, 3).reshape(2, 4, 9)], 2)
    q = torch.softmax(anchors.transpose(1, 2) @ x.reshape(2, 4, 90) / 2.0, dim=1)
    torch.testing.assert_close(res.assignment, q)
    torch.testing.assert_close(res.map.sum(2), torch.ones(2, 10, dtype=D), atol=1e-5, rtol=0)


def blocks():
    c = 6
    return {
        "projection+gcn": (LowRankBlock(ProjectionMapper(c, 4, "none"), GraphConvReasoner(4, c, 5), TransposeReverse()), 4),
        "a2-like": (LowRankBlock(ProjectionMapper(c, 3), None, ProjectionReverse(c, 3)), 3),
        "em": (LowRankBlock(EMMapper(c, 5, 2)), 5),
        "grid": (LowRankBlock(GridPoolingMapper(2), NodeAttentionReasoner(), UpsampleReverse()), 4),
        "pyramid": (LowRankBlock(PyramidAnchorMapper((1, 2)), None, TransposeReverse("sum")), 5),
        "gauss": (LowRankBlock(GaussianAnchorMapper(c, 3), None, TransposeReverse("l2")), 3),
    }


@pytest.mark.parametrize("name", list(blocks()))
def test_block_output_is_its_operator_applied_and_macs(name):
    """Output = M_rev f(M_map X) with the returned factors (a rank bound would hold for any N x K
    times K x N product, whatever the normalisations, so it is not asserted)."""
    block, k = blocks()[name]
    block = block.double().eval()
    x = torch.randn(1, 6, 7, 9, dtype=D)
    y, f = block(x, return_factors=True)
    assert f["map"].shape == (1, k, 63) and f["reverse"].shape == (1, 63, k)
    torch.testing.assert_close(y.reshape(1, -1, 63), f["reasoned"] @ f["reverse"].transpose(1, 2))
    # nodes = X M_map^T, except EM (nodes = the l2-normalised mu) and Gaussian anchors (residuals to
    # the anchors); both are tested against their formulas in their own tests
    if name not in ("gauss", "em"):
        torch.testing.assert_close(f["nodes"], x.reshape(1, 6, 63) @ f["map"].transpose(1, 2))
    if isinstance(block.reasoner, IdentityReasoner) and name not in ("gauss", "em"):
        operator = f["reverse"][0] @ f["map"][0]
        torch.testing.assert_close(y.reshape(6, 63), x.reshape(6, 63) @ operator.T)
    assert block.macs(7, 9, 6) == count_macs(block.float(), x.float())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_block_low_precision(dtype):
    block = LowRankBlock(ProjectionMapper(8, 4), GraphConvReasoner(4, 8), ProjectionReverse(8, 4))
    x = torch.randn(2, 8, 5, 7)
    ref = block(x)
    y = block.to(dtype)(x.to(dtype))
    assert y.dtype == dtype
    assert (y.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05


def test_bad_normalisation_names():
    with pytest.raises(ValueError, match="unknown normalisation"):
        ProjectionMapper(4, 2, "softmax_k")
    with pytest.raises(ValueError, match="unknown normalisation"):
        TransposeReverse("sigmoid")
    with pytest.raises(ValueError, match="bins must be an int >= 1"):
        GridPoolingMapper(0)


def test_call_step_hooks_visits_every_submodule():
    class Counter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def after_optimizer_step(self) -> None:
            self.calls += 1

    model = nn.Sequential(Counter(), nn.Sequential(nn.ReLU(), Counter()))
    assert call_step_hooks(model) == 2
    assert model[0].calls == 1 and model[1][1].calls == 1


def test_rectangular_grid():
    x = torch.randn(1, 2, 7, 11, dtype=D)
    y = LowRankBlock(GridPoolingMapper(grid=(2, 3)), None, UpsampleReverse())(x)
    torch.testing.assert_close(y, F.interpolate(F.adaptive_avg_pool2d(x, (2, 3)), size=(7, 11), mode="bilinear"))


@pytest.mark.parametrize("name", ["grid", "gauss", "pyramid"])
def test_block_compiles_fullgraph(name):
    block, _ = blocks()[name]
    x = torch.randn(2, 6, 5, 7)
    compiled = torch.compile(block, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), block(x))
