"""Pooling baselines: PSPNet's pyramid pooling (``ppm``) and DeepLabV3's ASPP (``aspp``).

Also the helpers other modules reuse: :func:`pyramid_pool` (ANN's parameter-free PSP sampling) and
:func:`pooling_matrices` (the explicit P_b / U_b operators of spec 1.2, for tests and analysis).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import checked
from segattn.layers import ConvNormAct
from segattn.lowrank.functional import pooling_matrix, upsampling_matrix
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.weightmaps import flat_index
from segattn.registry import MODULES


def pyramid_pool(x: Tensor, sizes: Sequence[int]) -> Tensor:
    """Adaptive average pooling of (B, C, H, W) to each size s, flattened and concatenated: (B, C, sum s^2)."""
    return torch.cat([F.adaptive_avg_pool2d(x, s).flatten(2) for s in sizes], dim=2)


def pooling_matrices(
    height: int, width: int, bin_size: int, align_corners: bool, dtype: torch.dtype = torch.float64
) -> Tuple[Tensor, Tensor]:
    """``(P_b, U_b)``: the (b^2, N) adaptive-average-pooling and (N, b^2) bilinear-upsampling matrices.

    Built by applying the very operators the modules use to one-hot images (spec 1.2), so that
    ``U_b P_b X^T`` reproduces ``interpolate(adaptive_avg_pool2d(X, b))`` (X as C x N).
    """
    n, s = height * width, bin_size * bin_size
    pool = F.adaptive_avg_pool2d(torch.eye(n, dtype=dtype).view(n, 1, height, width), bin_size)
    up = F.interpolate(
        torch.eye(s, dtype=dtype).view(s, 1, bin_size, bin_size), (height, width), mode="bilinear",
        align_corners=align_corners,
    )
    return pool.view(n, s).T.contiguous(), up.view(s, n).T.contiguous()


def _check_channels(name: str, value: int) -> int:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


@MODULES.register("ppm", paper="Zhao, Shi, Qi, Wang, Jia, CVPR 2017", family="pooling", order="O(N C^2)")
class PyramidPooling(ContextModule):
    """PSPNet pyramid pooling module: ``[X, U_1 f_1(P_1 X), ..., U_6 f_6(P_6 X)] -> bottleneck``.

    Shapes: X (B, C, H, W). For each bin b in ``bins`` (default (1, 2, 3, 6)): adaptive average pool
    to b x b -> 1x1 conv C -> C_b (no bias, C_b = C / len(bins), 512 for C = 2048) -> BN -> ReLU ->
    bilinear upsample to H x W (``align_corners=True`` as hszhao/semseg; mmseg uses False). The
    concatenation [X, branches] has C + len(bins) C_b channels. With ``bottleneck=True`` (default) a
    3x3 conv -> BN -> ReLU maps it to ``out_channels`` (default C; PSPNet's head uses 512 for C = 2048,
    pass ``out_channels=C // 4`` for that); with ``bottleneck=False`` the module returns the
    concatenation itself (``out_channels`` = C + len(bins) C_b), for heads that fuse it their own way.
    Dropout and classifier belong to the head. BatchNorm is :class:`segattn.layers.BatchNorm2d`
    (bin 1 works with batch 1 in training). Each branch is the rank <= b^2 operator U_b P_b of
    spec 1.2 (:func:`pooling_matrices`). Cost (MACs, batch 1): sum_b b^2 C C_b + 9 N (C + sum C_b)
    out_channels with the bottleneck; order O(N C^2).
    """

    @checked()
    def __init__(
        self,
        in_channels: int,
        *,
        bins: Sequence[int] = (1, 2, 3, 6),
        branch_channels: Optional[int] = None,
        bottleneck: bool = True,
        out_channels: Optional[int] = None,
        align_corners: bool = True,
    ) -> None:
        super().__init__(in_channels)
        if not bins or any(b < 1 for b in bins):
            raise ValueError(f"bins must be a non-empty sequence of positive ints, got {bins!r}")
        self.bins = tuple(int(b) for b in bins)
        self.branch_channels = _check_channels("branch_channels", branch_channels or max(1, in_channels // len(bins)))
        self.align_corners = align_corners
        self.branches = nn.ModuleList(ConvNormAct(in_channels, self.branch_channels, 1) for _ in self.bins)
        concat = in_channels + len(self.bins) * self.branch_channels
        if bottleneck:
            self.out_channels = _check_channels("out_channels", out_channels or in_channels)
            self.bottleneck: Optional[ConvNormAct] = ConvNormAct(concat, self.out_channels, 3)
        else:
            if out_channels is not None and out_channels != concat:
                raise ValueError(f"without a bottleneck out_channels is the concatenation width {concat}, got {out_channels}")
            self.out_channels, self.bottleneck = concat, None

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        size = x.shape[-2:]
        feats, factors = [x], {}
        for b, branch in zip(self.bins, self.branches):
            pooled = branch(F.adaptive_avg_pool2d(x, b))
            factors[f"bin{b}"] = pooled
            feats.append(F.interpolate(pooled, size, mode="bilinear", align_corners=self.align_corners))
        y = torch.cat(feats, dim=1)
        del feats  # the upsampled branches are not needed once concatenated (eval peak: one map set less)
        if self.bottleneck is not None:
            y = self.bottleneck(y)
        return (y, factors) if return_attention else y

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """Per bin b, the fixed row ``U_b P_b`` (adaptive average pooling, then bilinear upsampling): convex."""
        ref = next(iter(factors.values()))
        q = flat_index(query, size[1])
        maps = {}
        for b in self.bins:
            up = upsampling_matrix(size, (b, b), self.align_corners, ref.device, torch.float32)[q]
            maps[f"bin {b}"] = (up @ pooling_matrix(size, (b, b), ref.device, torch.float32)).reshape(size)
        return maps, True

    def flops(self, height: int, width: int) -> int:
        """MACs of the branch convs (at b x b) and the 3x3 bottleneck (batch 1)."""
        macs = sum(branch.macs(b, b) for b, branch in zip(self.bins, self.branches))
        return macs + (self.bottleneck.macs(height, width) if self.bottleneck is not None else 0)


@MODULES.register("aspp", paper="Chen, Papandreou, Schroff, Adam, arXiv 2017", family="pooling", order="O(N C^2)")
class ASPP(ContextModule):
    """DeepLabV3 atrous spatial pyramid pooling with image-level pooling.

    Shapes: X (B, C, H, W). Parallel branches, each C -> C_b (default C / 8, 256 for C = 2048) with
    conv (no bias) -> BN -> ReLU: a 1x1 conv; 3x3 atrous convs with ``dilations`` (default (12, 24, 36),
    the output-stride-8 rates; use (6, 12, 18) at OS 16); and, with ``image_pooling`` (default True),
    global average pooling -> 1x1 conv -> BN -> ReLU -> broadcast to H x W (= bilinear upsampling of a
    1x1 map; the rank-1 operator 11^T/N = PPM bin 1). Concatenation (B, (2 + len(dilations)) C_b, H, W)
    -> ``bottleneck`` conv (kernel ``bottleneck_kernel``: 1 as the paper, 3 as mmseg) -> BN -> ReLU
    to ``out_channels`` (default C; the paper uses 256). ``bottleneck=False`` returns the concatenation.
    BatchNorm is :class:`segattn.layers.BatchNorm2d` (the pooled branch works with batch 1 in
    training). mmseg deviates: 512-channel branches, 3x3 bottleneck. Cost (MACs, batch 1):
    N C C_b (1 + 9 len(dilations)) + C C_b + N k^2 (concat) out_channels; order O(N C^2).
    """

    @checked()
    def __init__(
        self,
        in_channels: int,
        *,
        dilations: Sequence[int] = (12, 24, 36),
        branch_channels: Optional[int] = None,
        image_pooling: bool = True,
        bottleneck: bool = True,
        bottleneck_kernel: int = 1,
        out_channels: Optional[int] = None,
    ) -> None:
        super().__init__(in_channels)
        self.dilations = tuple(int(d) for d in dilations)
        self.branch_channels = _check_channels("branch_channels", branch_channels or max(1, in_channels // 8))
        cb = self.branch_channels
        self.conv1x1 = ConvNormAct(in_channels, cb, 1)
        self.atrous = nn.ModuleList(ConvNormAct(in_channels, cb, 3, dilation=d) for d in self.dilations)
        self.image_pool = ConvNormAct(in_channels, cb, 1) if image_pooling else None
        concat = cb * (1 + len(self.dilations) + int(image_pooling))
        if bottleneck:
            self.out_channels = _check_channels("out_channels", out_channels or in_channels)
            self.bottleneck: Optional[ConvNormAct] = ConvNormAct(concat, self.out_channels, bottleneck_kernel)
        else:
            if out_channels is not None and out_channels != concat:
                raise ValueError(f"without a bottleneck out_channels is the concatenation width {concat}, got {out_channels}")
            self.out_channels, self.bottleneck = concat, None

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        feats = [self.conv1x1(x)] + [conv(x) for conv in self.atrous]
        factors: Attention = {}
        if self.image_pool is not None:
            pooled = self.image_pool(F.adaptive_avg_pool2d(x, 1))
            factors["image_pool"] = pooled
            feats.append(pooled.expand(-1, -1, x.shape[2], x.shape[3]))
        y = torch.cat(feats, dim=1)
        del feats  # the branch outputs are not needed once concatenated (eval peak: one map set less)
        factors["concat"] = y
        if self.bottleneck is not None:
            y = self.bottleneck(y)
        return (y, factors) if return_attention else y

    def flops(self, height: int, width: int) -> int:
        """MACs of the branch convs and the bottleneck (batch 1)."""
        macs = self.conv1x1.macs(height, width) + sum(conv.macs(height, width) for conv in self.atrous)
        if self.image_pool is not None:
            macs += self.image_pool.macs(1, 1)
        return macs + (self.bottleneck.macs(height, width) if self.bottleneck is not None else 0)
