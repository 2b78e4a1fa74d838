"""DMNet: dynamic depthwise filters generated from the pooled input (spec successors A.6)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import segattn
from segattn.modules.dmnet import DynamicConvModule, dynamic_depthwise_conv
from tests.helpers import perturb_

D = torch.float64


@pytest.mark.parametrize("s", [1, 3, 5])
def test_odd_filter_equals_per_sample_same_conv(s):
    x = torch.randn(3, 4, 6, 5, dtype=D)
    k = torch.randn(3, 4, s, s, dtype=D)
    y = dynamic_depthwise_conv(x, k)
    for b in range(3):
        torch.testing.assert_close(y[b:b + 1], F.conv2d(x[b:b + 1], k[b].unsqueeze(1), padding=s // 2, groups=4))


def test_even_filter_pads_top_left():
    x = torch.randn(1, 2, 4, 4, dtype=D)
    k = torch.zeros(1, 2, 2, 2, dtype=D)
    k[:, :, 0, 0] = 1.0  # picks the input one row up and one column left
    y = dynamic_depthwise_conv(x, k)
    torch.testing.assert_close(y[:, :, 1:, 1:], x[:, :, :-1, :-1])
    assert (y[:, :, 0] == 0).all() and (y[:, :, :, 0] == 0).all()


def test_size_one_is_a_per_sample_channel_scale():
    torch.manual_seed(0)
    dcm = perturb_(DynamicConvModule(6, 3, 1)).double().eval()
    x = torch.randn(2, 6, 4, 5, dtype=D)
    y, kernels = dcm(x)
    scale = dcm.filter_gen(x.mean((2, 3), keepdim=True))  # (B, c, 1, 1)
    torch.testing.assert_close(kernels, scale)
    torch.testing.assert_close(y, F.relu(dcm.norm(dcm.reduce(x) * scale)))


def test_filters_depend_on_the_image():
    torch.manual_seed(0)
    m = perturb_(segattn.create_module("dmnet", 8)).double().eval()
    _, f1 = m(torch.randn(1, 8, 9, 9, dtype=D), return_attention=True)
    _, f2 = m(torch.randn(1, 8, 9, 9, dtype=D), return_attention=True)
    assert set(f1) == {"filter_1", "filter_3", "filter_5", "filter_7"}
    assert f1["filter_7"].shape == (1, 2, 7, 7)
    assert (f1["filter_3"] - f2["filter_3"]).abs().max() > 1e-3


def test_bad_arguments():
    with pytest.raises(ValueError, match="filter_sizes"):
        segattn.create_module("dmnet", 8, filter_sizes=(0, 3))
    with pytest.raises(ValueError, match="reduction"):
        segattn.create_module("dmnet", 8, reduction=0)


def test_only_the_concatenation_is_live_at_the_bottleneck():
    """Memory: at the 3x3 bottleneck only the concatenation (C + 4c = 5 maps at reduction 1) is live,
    not the last branch's map too (it cost mmseg's DM head peak RSS +8-15 % at 97-128 px)."""
    from tests.helpers import live_maps_before

    module = segattn.create_module("dmnet", 32, reduction=1)
    assert live_maps_before(module, module.bottleneck, torch.randn(1, 32, 24, 24)) <= 5.25  # + the kernels
