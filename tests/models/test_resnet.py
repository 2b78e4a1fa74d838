"""Dilated ResNet backbones: stage shapes, output stride, multi-grid, feature_info, parameter counts."""

from __future__ import annotations

import pytest
import torch

from segattn.models.backbones import ResNet, create_backbone, list_backbones
from segattn.models.backbones.resnet import Bottleneck


@pytest.mark.parametrize("name, output_stride", [("resnet18", 8), ("resnet18", 16), ("resnet18", 32),
                                                  ("resnet50c", 8)])
def test_feature_shapes_match_feature_info(name: str, output_stride: int) -> None:
    net = create_backbone(name, output_stride=output_stride)
    x = torch.randn(1, 3, 65, 97)
    feats = net(x)
    assert len(feats) == 4
    for f, c, r in zip(feats, net.feature_info.channels(), net.feature_info.reduction()):
        assert f.shape[1] == c
        assert f.shape[2:] == (-(-65 // r), -(-97 // r))
    assert net.feature_info.reduction()[-1] == output_stride


def test_out_indices_and_stem() -> None:
    net = create_backbone("resnet18", out_indices=(0, 4), output_stride=16)
    feats = net(torch.randn(2, 3, 32, 32))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 16, 16), (2, 512, 2, 2)]
    assert net.feature_info.channels() == [64, 512] and net.feature_info.reduction() == [2, 16]
    assert net.feature_info.module_names() == ["stem", "layer4"]
    assert net.feature_info[1]["num_chs"] == 512 and len(net.feature_info) == 2


def test_dilations_and_multi_grid() -> None:
    net = ResNet(50, output_stride=8, multi_grid=(1, 2, 4))
    d3 = [b.conv2.dilation[0] for b in net.layer3]
    d4 = [b.conv2.dilation[0] for b in net.layer4]
    assert d3 == [1] + [2] * 5  # first block of a dilated stage uses half the dilation
    assert d4 == [4, 8, 16]  # multi-grid multiplies the stage dilation (DANet 4, 8, 16)
    assert all(b.conv2.stride == (1, 1) for b in net.layer4)
    plain = ResNet(50, output_stride=16)
    assert [b.conv2.dilation[0] for b in plain.layer4] == [1, 2, 2]
    assert plain.layer3[0].conv2.stride == (2, 2)


def test_padding_keeps_size_under_dilation() -> None:
    net = ResNet(18, output_stride=8, multi_grid=(1, 2))
    feats = net(torch.randn(1, 3, 41, 41))
    assert feats[-1].shape[-2:] == (6, 6)


def test_parameter_counts_match_reference_architectures() -> None:
    # torchvision resnet18 / resnet50 without the fc layer: 11,176,512 and 23,508,032 parameters
    assert sum(p.numel() for p in ResNet(18).parameters()) == 11_176_512
    with torch.device("meta"):
        assert sum(p.numel() for p in ResNet(50).parameters()) == 23_508_032
        assert sum(p.numel() for p in ResNet(101).parameters()) == 42_500_160
        assert sum(p.numel() for p in ResNet(152).parameters()) == 58_143_808
        assert sum(p.numel() for p in ResNet(34).parameters()) == 21_284_672


def test_variants() -> None:
    assert {"resnet18", "resnet50c", "resnet101d", "resnet152"} <= set(list_backbones())
    with torch.device("meta"):
        c = create_backbone("resnet50c")
        d = create_backbone("resnet50d")
    assert len(c.stem) == 3 and c.stem[0][0].kernel_size == (3, 3) and c.stem[2][0].out_channels == 64
    assert isinstance(c.layer2[0], Bottleneck)
    assert isinstance(d.layer2[0].downsample[0], torch.nn.AvgPool2d)
    assert not isinstance(c.layer2[0].downsample[0], torch.nn.AvgPool2d)


@pytest.mark.parametrize("name", ["resnet18", "resnet50c"])
def test_width_scales_every_stage(name: str) -> None:
    # width w: stem output w, layer i has w * 2**(i-1) (x4 for bottlenecks) channels; 64 is the standard net
    with torch.device("meta"):
        std, narrow = create_backbone(name), create_backbone(name, width=16)
    assert narrow.feature_info.channels() == [c // 4 for c in std.feature_info.channels()]
    assert narrow.stem[-1][0].out_channels == 16 and narrow.layer1[0].conv1.in_channels == 16
    feats = create_backbone(name, width=8, output_stride=8)(torch.randn(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [c // 8 for c in std.feature_info.channels()]
    # a basic-block net's parameters scale with width squared, up to the stem's first conv and the BN
    n16 = sum(p.numel() for p in ResNet(18, width=16).parameters())
    assert abs(n16 / 11_176_512 - 1 / 16) < 0.01


def test_classifier_mode_and_in_chans() -> None:
    net = ResNet(18, features_only=False, num_classes=7, in_chans=1)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_batch_norm_is_batch1_safe_everywhere() -> None:
    from segattn.layers import BatchNorm2d

    net = ResNet(18)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(isinstance(m, BatchNorm2d) for m in norms)


@pytest.mark.parametrize("kwargs, match", [
    ({"output_stride": 4}, "output_stride"),
    ({"out_indices": (5,)}, "out_indices"),
    ({"width": 0}, "width"),
    ({"width": 16.0}, "width"),
])
def test_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ResNet(18, **kwargs)
    with pytest.raises(ValueError, match="depth"):
        ResNet(20)
    with pytest.raises(ValueError, match="resnet"):
        create_backbone("resnet51")
