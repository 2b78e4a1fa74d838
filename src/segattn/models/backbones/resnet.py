"""Dilated ResNet-18/34/50/101/152 for segmentation (plain, V1c deep stem, V1d deep stem + avg-down).

Written here so that neither torchvision nor timm is a dependency. Parameter names follow the
torchvision / timm block layout (``layerN.i.conv1``, ``bn1``, ``downsample.0``...) so foreign
checkpoints load with a small key remap (see :mod:`segattn.models.weights`); the stem is
``stem.<k>`` = ConvNormAct blocks (one 7x7 conv for the plain form, three 3x3 convs for the deep
stem of ResNetV1c, the backbone of the mmsegmentation / PSPNet / EMANet references).

Output stride 8 / 16 / 32 replaces the stride of the last stages by dilation (the first block of a
dilated stage uses half the stage dilation, mmseg's ``contract_dilation`` = torchvision's
``replace_stride_with_dilation``); ``multi_grid`` multiplies the dilation of the blocks of stage 4
(DeepLabV3 / EMANet (1, 2, 4)). Explicit per-stage ``strides`` / ``dilations`` express any of mmseg's
layouts, e.g. its "D32" PSPNets: strides (1, 2, 2, 2) *and* dilations (1, 1, 2, 4), each stage's first
block striding and dilating at once.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from segattn.layers import BatchNorm2d, ConvNormAct, init_conv_bn_
from segattn.registry import BACKBONES

STAGE_DEPTHS: Dict[int, Tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
STRIDES_DILATIONS: Dict[int, Tuple[Tuple[int, ...], Tuple[int, ...]]] = {
    8: ((1, 2, 1, 1), (1, 1, 2, 4)),
    16: ((1, 2, 2, 1), (1, 1, 1, 2)),
    32: ((1, 2, 2, 2), (1, 1, 1, 1)),
}


class FeatureInfo:
    """timm-style description of the returned features: ``channels()``, ``reduction()``, ``module_names()``."""

    def __init__(self, info: List[Dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = info
        self.out_indices = tuple(out_indices)

    def _select(self, key: str, idx: Optional[int]) -> Union[int, str, List[Any]]:
        if idx is not None:
            return self.info[self.out_indices[idx]][key]
        return [self.info[i][key] for i in self.out_indices]

    def channels(self, idx: Optional[int] = None) -> Any:
        return self._select("num_chs", idx)

    def reduction(self, idx: Optional[int] = None) -> Any:
        return self._select("reduction", idx)

    def module_names(self, idx: Optional[int] = None) -> Any:
        return self._select("module", idx)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        return dict(self.info[self.out_indices[idx]])

    def __len__(self) -> int:
        return len(self.out_indices)

    def __repr__(self) -> str:
        return f"FeatureInfo(channels={self.channels()}, reduction={self.reduction()})"


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1) -> Tuple[nn.Conv2d, BatchNorm2d]:
    conv = nn.Conv2d(cin, cout, k, stride, dilation * (k - 1) // 2, dilation, bias=False)
    return conv, BatchNorm2d(cout)


def _downsample(cin: int, cout: int, stride: int, avg_down: bool) -> nn.Sequential:
    """1x1 projection shortcut; V1d pools first (``downsample.0`` AvgPool, ``.1`` conv, ``.2`` BN)."""
    if avg_down and stride > 1:
        pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
        conv, bn = _conv_bn(cin, cout, 1)
        return nn.Sequential(pool, conv, bn)
    conv, bn = _conv_bn(cin, cout, 1, stride)
    return nn.Sequential(conv, bn)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, dilation: int, first_dilation: int,
                 downsample: Optional[nn.Module]) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, planes, 3, stride, first_dilation)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, 1, dilation)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        y += x if self.downsample is None else self.downsample(x)  # in place, as torchvision / mmcv
        return self.relu(y)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride and dilation here, "ResNet v1.5") -> 1x1 x4 (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, dilation: int, first_dilation: int,
                 downsample: Optional[nn.Module]) -> None:
        super().__init__()
        del dilation  # one 3x3 conv per block: it uses first_dilation
        self.conv1, self.bn1 = _conv_bn(cin, planes, 1)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, stride, first_dilation)
        self.conv3, self.bn3 = _conv_bn(planes, planes * 4, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        y += x if self.downsample is None else self.downsample(x)  # in place, as torchvision / mmcv
        return self.relu(y)


def _block_dilations(n: int, dilation: int, grid: Optional[Sequence[float]], contract: bool = True) -> List[int]:
    """Dilation of each block's 3x3 conv: the first block of a dilated stage uses dilation // 2 when
    ``contract`` (mmseg's ``contract_dilation``), else the stage's dilation.

    With ``grid``, block ``i`` uses ``dilation * grid[i]``, which must be a whole number (a fractional
    multiplier such as 0.5 expresses mmseg's multi-grid, whose rates are not multiplied by the stage's)."""
    if grid is not None:
        rates = [dilation * float(grid[i % len(grid)]) for i in range(n)]
        if any(r < 1 or r != int(r) for r in rates):
            raise ValueError(f"multi_grid {tuple(grid)} at stage dilation {dilation} gives rates {rates}; "
                             "expected whole numbers >= 1")
        return [int(r) for r in rates]
    first = dilation // 2 if contract and dilation > 1 else dilation
    return [first] + [dilation] * (n - 1)


def _make_stage(block: type, cin: int, planes: int, n: int, stride: int, dilation: int,
                grid: Optional[Sequence[int]], avg_down: bool, contract: bool = True) -> nn.Sequential:
    cout = planes * block.expansion
    down = _downsample(cin, cout, stride, avg_down) if stride != 1 or cin != cout else None
    dils = _block_dilations(n, dilation, grid, contract)
    blocks = []
    for i in range(n):
        blocks.append(block(cin if i == 0 else cout, planes, stride if i == 0 else 1, dils[i], dils[i],
                            down if i == 0 else None))
    return nn.Sequential(*blocks)


def _make_stem(in_chans: int, deep_stem: bool, stem_width: int, width: int) -> nn.Sequential:
    if deep_stem:
        return nn.Sequential(
            ConvNormAct(in_chans, stem_width, 3, stride=2),
            ConvNormAct(stem_width, stem_width, 3),
            ConvNormAct(stem_width, width, 3),
        )
    return nn.Sequential(ConvNormAct(in_chans, width, 7, stride=2))


def _stage_layout(strides: Optional[Sequence[int]], dilations: Optional[Sequence[int]],
                  output_stride: Optional[int]) -> Tuple[Tuple[int, ...], Tuple[int, ...], int]:
    """``(strides, dilations, output_stride)`` of layer1..layer4, from explicit per-stage values or from
    ``output_stride``; ValueError naming the bad value otherwise."""
    if strides is None and dilations is None:
        if output_stride is None:
            output_stride = 32
        if output_stride not in STRIDES_DILATIONS:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        st, dil = STRIDES_DILATIONS[output_stride]
        return st, dil, output_stride
    if strides is None or dilations is None:
        raise ValueError(f"strides and dilations go together (one per stage each), got strides={strides!r}, "
                         f"dilations={dilations!r}")
    for what, vals in (("strides", strides), ("dilations", dilations)):
        ok = isinstance(vals, (list, tuple)) and len(vals) == 4 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in vals)
        if not ok:
            raise ValueError(f"{what} must be 4 ints >= 1 (layer1..layer4), got {vals!r}")
    st, dil = tuple(strides), tuple(dilations)
    implied = 4
    for s in st:
        implied *= s
    if output_stride is not None and output_stride != implied:
        raise ValueError(f"strides {st} give output stride {implied} but output_stride={output_stride!r}; "
                         f"pass output_stride={implied} (or None) with them")
    return st, dil, implied


class ResNet(nn.Module):
    """Dilated ResNet returning stage features (timm ``features_only`` style).

    Args:
        depth: 18, 34, 50, 101 or 152.
        output_stride: 8, 16 or 32; the strides of stages 3/4 become dilations (2, 4) at OS 8 and
            (1, 2) at OS 16. With ``strides`` given it must equal ``4 * prod(strides)`` (or be None).
        strides: explicit per-stage stride of layer1..layer4 (4 ints >= 1; given with ``dilations``), as
            mmseg's ``ResNet(strides=...)``: a stage's first block strides its 3x3 conv (and shortcut)
            and dilates it, at once. None = the ``output_stride`` layout.
        dilations: explicit per-stage dilation of layer1..layer4 (4 ints >= 1; given with ``strides``).
            ``strides=(1, 2, 2, 2), dilations=(1, 1, 2, 4)`` = mmseg's "D32" models.
        contract_dilation: the first block of a stage of dilation d > 1 uses d // 2 (True, mmseg's
            ``contract_dilation=True`` and the layout of every ``output_stride``) or d (False).
        multi_grid: multipliers of the stage-4 dilation per block (e.g. (1, 2, 4)); None = plain.
            Products must be whole numbers (mmseg's absolute rates (1, 2, 4) at OS 16 = (0.5, 1, 2)).
        deep_stem: three 3x3 convs (32, 32, ``width`` ch) instead of one 7x7 (ResNetV1c / timm "c").
        avg_down: average-pool in the projection shortcuts (ResNetV1d / timm "d").
        stem_width: width of the deep stem's first two convs.
        width: channels of the stem output and of layer1's 3x3 convs; layer ``i`` uses
            ``width * 2**(i-1)`` (64 = the standard ResNet; 16 gives a network with about 1/16 of the
            MACs, for quick experiments; pretrained files fit only 64).
        features_only: return a list of features at ``out_indices`` (default); otherwise global
            average pooling and a linear classifier of ``num_classes`` outputs.
        out_indices: timm indices: 0 = stem (reduction 2), 1..4 = layer1..layer4.
        dilate_conv2: ResNet-18/34 only: False leaves the second 3x3 conv of each block undilated, as
            mmcv / mmseg's ``BasicBlock`` does (timm dilates both; True).
        pretrained: path or URL of a torchvision / timm / mmseg / segattn ResNet checkpoint, or a
            weight name such as ``open-mmlab://resnet50_v1c`` or ``ResNet50_Weights.IMAGENET1K_V2``
            (:mod:`segattn.checkpoints.named`: fetched and sha256-checked when named; loaded with
            :func:`segattn.checkpoints.resnet.load_backbone_weights`; nothing is fetched unless passed).
    """

    def __init__(
        self,
        depth: int = 50,
        *,
        in_chans: int = 3,
        output_stride: Optional[int] = 32,
        strides: Optional[Sequence[int]] = None,
        dilations: Optional[Sequence[int]] = None,
        contract_dilation: bool = True,
        multi_grid: Optional[Sequence[float]] = None,
        deep_stem: bool = False,
        avg_down: bool = False,
        stem_width: int = 32,
        width: int = 64,
        features_only: bool = True,
        out_indices: Sequence[int] = (1, 2, 3, 4),
        num_classes: int = 1000,
        dilate_conv2: bool = True,
        pretrained: Optional[str] = None,
    ) -> None:
        super().__init__()
        if depth not in STAGE_DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(STAGE_DEPTHS)}, got {depth!r}")
        strides, dilations, output_stride = _stage_layout(strides, dilations, output_stride)
        if any(i not in range(5) for i in out_indices):
            raise ValueError(f"out_indices must lie in 0..4 (0 = stem, 1..4 = layer1..4), got {tuple(out_indices)}")
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"width must be a positive int (64 = standard ResNet), got {width!r}")
        block = BasicBlock if depth < 50 else Bottleneck
        self.depth, self.output_stride = depth, output_stride
        self.features_only, self.out_indices = features_only, tuple(out_indices)
        self.stem = _make_stem(in_chans, deep_stem, stem_width, width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, info = width, [{"num_chs": width, "reduction": 2, "module": "stem"}]
        reduction = 4
        for i, (n, planes) in enumerate(zip(STAGE_DEPTHS[depth], (width, 2 * width, 4 * width, 8 * width))):
            grid = multi_grid if i == 3 else None
            stage = _make_stage(block, cin, planes, n, strides[i], dilations[i], grid, avg_down, contract_dilation)
            self.add_module(f"layer{i + 1}", stage)
            cin = planes * block.expansion
            reduction *= strides[i]
            info.append({"num_chs": cin, "reduction": reduction, "module": f"layer{i + 1}"})
            if not dilate_conv2 and block is BasicBlock:
                for b in stage:
                    b.conv2.dilation, b.conv2.padding = (1, 1), (1, 1)
        self.feature_info = FeatureInfo(info, self.out_indices)
        self.num_features = cin
        self.fc = None if features_only or num_classes <= 0 else nn.Linear(cin, num_classes)
        self._init_weights()
        if pretrained:
            from segattn.checkpoints.named import resolve_pretrained
            from segattn.checkpoints.resnet import load_backbone_weights

            load_backbone_weights(self, resolve_pretrained(pretrained))

    def _init_weights(self) -> None:
        init_conv_bn_(self)

    def stages(self) -> List[nn.Module]:
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_features(self, x: Tensor, indices: Sequence[int] = (0, 1, 2, 3, 4)) -> List[Tensor]:
        """The feature maps at timm ``indices`` (0 = stem, 1..4 = layer1..layer4), in increasing order.

        A map that is not asked for is dropped as soon as the next stage has read it (the stem
        output of a ResNet-50 at 512x1024 is 32 MiB), so inference holds no more than it returns.
        """
        keep = set(indices)
        x = self.stem(x)
        feats = [x] if 0 in keep else []
        x = self.maxpool(x)
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), 1):
            x = layer(x)
            if i in keep:
                feats.append(x)
        return feats

    def forward(self, x: Tensor) -> Union[List[Tensor], Tensor]:
        if x.dim() != 4:
            raise ValueError(f"ResNet expects a (B, C, H, W) image batch, got shape {tuple(x.shape)}")
        if self.features_only:
            feats = self.forward_features(x, self.out_indices)
            order = sorted(set(self.out_indices))
            return [feats[order.index(i)] for i in self.out_indices]
        last = self.forward_features(x, (4,))[0]
        pooled = torch.flatten(last.mean((2, 3), keepdim=True), 1)
        return pooled if self.fc is None else self.fc(pooled)


VARIANTS = {"": (False, False), "c": (True, False), "d": (True, True)}


def _register(depth: int, suffix: str) -> None:
    deep_stem, avg_down = VARIANTS[suffix]
    name = f"resnet{depth}{suffix}"
    form = {"": "plain 7x7 stem (torchvision/timm layout)", "c": "deep 3x3 stem, ResNetV1c (mmseg)",
            "d": "deep stem + avg-down shortcuts, ResNetV1d"}[suffix]

    def factory(**kwargs: Any) -> ResNet:
        return ResNet(depth, deep_stem=deep_stem, avg_down=avg_down, **kwargs)

    factory.__name__ = name
    factory.__doc__ = f"ResNet-{depth}, {form}. Keywords: see :class:`ResNet`."
    BACKBONES.register(name, depth=depth, deep_stem=deep_stem, avg_down=avg_down, form=form)(factory)


for _depth in STAGE_DEPTHS:
    for _suffix in VARIANTS:
        _register(_depth, _suffix)
