"""Backbone / head options that express mmseg's layouts: BasicBlock dilation, absolute multi-grid, FCN-D6."""

from __future__ import annotations

import pytest

import segattn
from segattn.models.backbones import ResNet


def test_dilate_conv2_false_leaves_the_second_conv_plain() -> None:
    timm_like = ResNet(18, output_stride=8, width=8)
    mmcv_like = ResNet(18, output_stride=8, width=8, dilate_conv2=False)
    assert timm_like.layer4[1].conv2.dilation == (4, 4) and timm_like.layer4[1].conv1.dilation == (4, 4)
    assert mmcv_like.layer4[1].conv2.dilation == (1, 1) and mmcv_like.layer4[1].conv2.padding == (1, 1)
    assert mmcv_like.layer4[0].conv1.dilation == (2, 2)  # the first block keeps half the stage dilation
    bottleneck = ResNet(50, output_stride=8, width=8, dilate_conv2=False)  # BasicBlock only
    assert bottleneck.layer4[1].conv2.dilation == (4, 4)


def test_fractional_multi_grid_gives_mmseg_absolute_rates() -> None:
    net = ResNet(50, output_stride=16, width=8, multi_grid=(0.5, 1, 2))
    assert [b.conv2.dilation[0] for b in net.layer4] == [1, 2, 4]
    with pytest.raises(ValueError, match=r"multi_grid \(0.3, 1, 2\) at stage dilation 2 .* whole numbers"):
        ResNet(50, output_stride=16, width=8, multi_grid=(0.3, 1, 2))


def test_fcn_head_dilation() -> None:
    model = segattn.create_model("fcn", 3, backbone="resnet18", output_stride=16, dilation=6, channels=16,
                                 aux=False)
    assert model.head.reduce[0].dilation == (6, 6) and model.head.reduce[0].padding == (6, 6)
    assert model.head.post_conv[0].dilation == (6, 6) and model.head.fuse[0].dilation == (1, 1)
    with pytest.raises(ValueError, match="fcn: dilation must be an int >= 1, got 0"):
        segattn.create_model("fcn", 3, backbone="resnet18", dilation=0)
