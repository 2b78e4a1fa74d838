"""APCNet: ACM identities (spec 1.10: s = 1 is a sigmoid gate on the pooled vector) and switches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import segattn
from segattn.modules.apcnet import AdaptiveContextModule
from segattn.ops.flops import count_macs
from tests.helpers import perturb_

D = torch.float64


def test_acm_scale_one_is_sigmoid_gate_on_global_vector():
    torch.manual_seed(0)
    acm = perturb_(AdaptiveContextModule(8, 4, scale=1)).double().eval()
    x = torch.randn(2, 8, 5, 7, dtype=D)
    _, z, alpha = acm.context(x)
    pooled = acm.pooled_conv(x.mean((2, 3), keepdim=True))  # (B, c, 1, 1)
    reduced = acm.input_conv(x)
    guide = acm.global_conv(reduced.mean((2, 3), keepdim=True))
    gate = torch.sigmoid(acm.gla(reduced + guide))  # (B, 1, H, W)
    torch.testing.assert_close(z, gate * pooled, atol=1e-12, rtol=0)
    torch.testing.assert_close(alpha, gate.flatten(2).transpose(1, 2), atol=1e-12, rtol=0)


def test_acm_matches_explicit_pooling_matrix():
    torch.manual_seed(0)
    acm = perturb_(AdaptiveContextModule(8, 4, scale=3)).double().eval()
    h, w = 7, 5
    x = torch.randn(1, 8, h, w, dtype=D)
    _, z, alpha = acm.context(x)
    # P_s: s^2 x N adaptive-average-pooling matrix from one-hot images
    pool = F.adaptive_avg_pool2d(torch.eye(h * w, dtype=D).view(h * w, 1, h, w), 3).flatten(1).T
    cells = acm.pooled_conv((x.flatten(2) @ pool.T).view(1, 8, 3, 3)).flatten(2)[0]  # (c, s^2)
    torch.testing.assert_close(z[0].flatten(1), cells @ alpha[0].T, atol=1e-12, rtol=0)


def test_affinity_is_sigmoid_not_softmax():
    m = perturb_(segattn.create_module("apcnet", 16)).eval()
    _, f = m(torch.randn(2, 16, 6, 9), return_attention=True)
    assert set(f) == {"affinity_1", "affinity_2", "affinity_3", "affinity_6"}
    a = f["affinity_6"]
    assert a.shape == (2, 54, 36) and ((a > 0) & (a < 1)).all()
    assert (a.sum(-1) - 1).abs().max() > 0.1


def test_global_context_reaches_every_pixel():
    m = perturb_(segattn.create_module("apcnet", 16)).eval().double()
    x = torch.randn(1, 16, 6, 7, dtype=D, requires_grad=True)
    m(x)[0, :, 0, 0].sum().backward()
    assert (x.grad.abs().sum(1)[0] > 0).all()


def test_no_bottleneck_channels_gradcheck_flops():
    torch.manual_seed(0)
    m = perturb_(segattn.create_module("apcnet", 16, bottleneck=False, fusion=False, pool_scales=(1, 3)))
    assert m.out_channels == 16 + 2 * 4
    m = m.double().eval()
    x = torch.randn(1, 16, 3, 5, dtype=D, requires_grad=True)
    assert m(x).shape == (1, 24, 3, 5)
    assert torch.autograd.gradcheck(m, (x,), fast_mode=True)
    assert m.flops(7, 13) == count_macs(m.float(), torch.randn(1, 16, 7, 13))


def test_bad_scales():
    with pytest.raises(ValueError, match="pool_scales"):
        segattn.create_module("apcnet", 16, pool_scales=(0, 2))
    with pytest.raises(ValueError, match="pool_scales"):
        segattn.create_module("apcnet", 16, pool_scales=())


def test_only_the_concatenation_is_live_at_the_bottleneck():
    """Memory: at the 3x3 bottleneck only the concatenation (C + 4c = 5 maps at reduction 1) and the
    small affinities are live, not the last ACM's output map too."""
    from tests.helpers import live_maps_before

    module = segattn.create_module("apcnet", 32, reduction=1)
    affinities = (1 + 4 + 9 + 36) / 32  # N x sum s^2 against N x C
    assert live_maps_before(module, module.bottleneck, torch.randn(1, 32, 24, 24)) <= 5.1 + affinities
