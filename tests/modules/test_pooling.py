"""PPM / ASPP as explicit pooling operators (spec 1.2, 1.10) in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import segattn
from segattn.modules.pooling import pooling_matrices, pyramid_pool
from tests.helpers import perturb_

C = 8
D64 = torch.float64


def build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(segattn.create_module(name, C, **kwargs)).to(D64).eval()


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("size", [(7, 5), (6, 6), (1, 3)])
@pytest.mark.parametrize("b", [1, 2, 3, 6])
def test_pooling_matrices_row_stochastic_low_rank_and_exact(align_corners, size, b):
    h, w = size
    pool, up = pooling_matrices(h, w, b, align_corners)
    assert pool.shape == (b * b, h * w) and up.shape == (h * w, b * b)
    ones = torch.ones(1, dtype=D64)
    torch.testing.assert_close(pool.sum(1), ones.expand(b * b), atol=1e-12, rtol=0)
    torch.testing.assert_close(up.sum(1), ones.expand(h * w), atol=1e-12, rtol=0)
    assert (pool >= 0).all() and (up >= -1e-15).all()
    x = torch.randn(2, C, h, w, dtype=D64)
    expected = F.interpolate(F.adaptive_avg_pool2d(x, b), (h, w), mode="bilinear", align_corners=align_corners)
    torch.testing.assert_close((x.flatten(2) @ (up @ pool).T).view_as(x), expected, atol=1e-12, rtol=0)


def test_bin_one_is_global_mean_and_align_corners_matters():
    pool, up = pooling_matrices(5, 7, 1, align_corners=False)
    torch.testing.assert_close(up @ pool, torch.full((35, 35), 1 / 35, dtype=D64), atol=1e-15, rtol=0)
    _, up_t = pooling_matrices(5, 7, 3, align_corners=True)
    _, up_f = pooling_matrices(5, 7, 3, align_corners=False)
    assert (up_t - up_f).abs().max() > 1e-2


def test_adaptive_bins_overlap_when_not_divisible():
    pool, _ = pooling_matrices(7, 3, 3, align_corners=False)
    support = (pool > 0).sum(0)
    assert support.max() == 2 and support.min() == 1  # pixels shared by two bins


@pytest.mark.parametrize("align_corners", [True, False])
def test_ppm_branches_are_the_pooling_operators(align_corners):
    ppm = build("ppm", bottleneck=False, align_corners=align_corners)
    x = torch.randn(2, C, 7, 9, dtype=D64)
    y = ppm(x)
    assert y.shape == (2, ppm.out_channels, 7, 9) and ppm.out_channels == C + 4 * ppm.branch_channels
    torch.testing.assert_close(y[:, :C], x, atol=0, rtol=0)
    for i, (b, branch) in enumerate(zip(ppm.bins, ppm.branches)):
        pool, up = pooling_matrices(7, 9, b, align_corners)
        pooled = (x.flatten(2) @ pool.T).view(2, C, b, b)
        expected = (branch(pooled).flatten(2) @ up.T).view(2, -1, 7, 9)
        lo = C + i * ppm.branch_channels
        torch.testing.assert_close(y[:, lo : lo + ppm.branch_channels], expected, atol=1e-12, rtol=0)


def test_aspp_image_pooling_equals_ppm_bin_one():
    aspp = build("aspp", bottleneck=False)
    cb = aspp.branch_channels
    ppm = build("ppm", bins=(1,), branch_channels=cb, bottleneck=False)
    ppm.branches[0].load_state_dict(aspp.image_pool.state_dict())
    x = torch.randn(2, C, 6, 5, dtype=D64)
    _, f = aspp(x, return_attention=True)
    torch.testing.assert_close(f["concat"][:, -cb:], ppm(x)[:, C:], atol=1e-12, rtol=0)
    pool, up = pooling_matrices(6, 5, 1, align_corners=False)
    operator = up @ pool  # 11^T / N
    expected = aspp.image_pool((x.flatten(2) @ operator.T).view_as(x))
    torch.testing.assert_close(f["concat"][:, -cb:], expected, atol=1e-12, rtol=0)


def test_out_channels_options():
    assert segattn.create_module("ppm", C, out_channels=3).out_channels == 3
    assert segattn.create_module("aspp", C, image_pooling=False, bottleneck=False).out_channels == 4 * (C // 8)
    with pytest.raises(ValueError, match="concatenation width"):
        segattn.create_module("ppm", C, bottleneck=False, out_channels=C)


@pytest.mark.parametrize("name", ["ppm", "aspp"])
def test_batch_one_train_updates_nothing_on_pooled_bn(name):
    module = segattn.create_module(name, C).train()
    y = module(torch.randn(1, C, 1, 1))
    assert y.shape == (1, module.out_channels, 1, 1) and torch.isfinite(y).all()


def test_pyramid_pool_counts_anchors():
    x = torch.randn(2, C, 3, 5)
    assert pyramid_pool(x, (1, 3, 6, 8)).shape == (2, C, 110)
    torch.testing.assert_close(pyramid_pool(x, (1,))[..., 0], x.mean((2, 3)))
