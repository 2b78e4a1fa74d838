"""Backbone / head options that express mmseg's layouts: BasicBlock dilation, absolute multi-grid, FCN-D6."""

from __future__ import annotations

import pytest
import torch

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


def test_explicit_strides_and_dilations_stride_and_dilate_the_first_block_at_once() -> None:
    """mmseg's "D32" layout: strides (1, 2, 2, 2) and dilations (1, 1, 2, 4), contracted first blocks."""
    net = ResNet(50, output_stride=32, width=8, strides=(1, 2, 2, 2), dilations=(1, 1, 2, 4))
    assert [(b.conv2.stride[0], b.conv2.dilation[0], b.conv2.padding[0]) for b in net.layer3] == \
        [(2, 1, 1)] + [(1, 2, 2)] * 5
    assert [(b.conv2.stride[0], b.conv2.dilation[0]) for b in net.layer4] == [(2, 2), (1, 4), (1, 4)]
    assert net.layer4[0].downsample[0].stride == (2, 2)
    assert net.feature_info.reduction() == [4, 8, 16, 32] and net.output_stride == 32
    assert [tuple(f.shape[-2:]) for f in net(torch.zeros(1, 3, 72, 104))] == [(18, 26), (9, 13), (5, 7), (3, 4)]
    loose = ResNet(50, output_stride=None, width=8, strides=(1, 2, 2, 2), dilations=(1, 1, 2, 4),
                   contract_dilation=False)
    assert [b.conv2.dilation[0] for b in loose.layer4] == [4, 4, 4] and loose.layer3[0].conv2.dilation == (2, 2)
    basic = ResNet(18, output_stride=32, width=8, strides=(1, 2, 2, 2), dilations=(1, 1, 2, 4), dilate_conv2=False)
    assert [b.conv1.dilation[0] for b in basic.layer4] == [2, 4] and basic.layer4[1].conv2.dilation == (1, 1)


def test_the_output_stride_layouts_are_the_explicit_ones() -> None:
    for os_, strides, dilations in ((8, (1, 2, 1, 1), (1, 1, 2, 4)), (16, (1, 2, 2, 1), (1, 1, 1, 2)),
                                    (32, (1, 2, 2, 2), (1, 1, 1, 1))):
        a = ResNet(50, output_stride=os_, width=8)
        b = ResNet(50, output_stride=None, width=8, strides=strides, dilations=dilations)
        assert [(m.stride, m.dilation, m.padding) for m in a.modules() if isinstance(m, torch.nn.Conv2d)] == \
            [(m.stride, m.dilation, m.padding) for m in b.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize("kwargs, message", [
    ({"strides": (1, 2, 2, 2)}, r"strides and dilations go together .* dilations=None"),
    ({"strides": (1, 2, 2), "dilations": (1, 1, 2, 4)}, r"strides must be 4 ints >= 1 .* got \(1, 2, 2\)"),
    ({"strides": (1, 2, 2, 2), "dilations": (1, 1, 0, 4)}, r"dilations must be 4 ints >= 1"),
    ({"strides": (1, 2, 2, 2), "dilations": (1, 1, 2, 4), "output_stride": 8},
     r"strides \(1, 2, 2, 2\) give output stride 32 but output_stride=8; pass output_stride=32"),
])
def test_bad_stage_layouts_are_named(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        ResNet(50, width=8, **kwargs)


def test_create_model_takes_the_d32_layout_through_backbone_kw() -> None:
    model = segattn.create_model("pspnet", 3, backbone="resnet18", output_stride=32, channels=16, aux=False,
                                 backbone_kw={"strides": [1, 2, 2, 2], "dilations": [1, 1, 2, 4]})
    assert model.backbone.layer4[0].conv1.stride == (2, 2) and model.backbone.layer4[1].conv1.dilation == (4, 4)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 64, 96)).shape == (1, 3, 64, 96)
