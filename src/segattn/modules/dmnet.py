"""DMNet: dynamic multi-scale filters (He, Deng, Qiao, ICCV 2019)."""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import checked
from segattn.layers import BatchNorm2d, ConvNormAct
from segattn.modules.base import ContextModule, ModuleOutput
from segattn.registry import MODULES


def dynamic_depthwise_conv(x: Tensor, kernels: Tensor) -> Tensor:
    """Per-sample depthwise convolution: ``x`` (B, c, h, w) with ``kernels`` (B, c, s, s), zero padding,
    output (B, c, h, w). Odd s pads (s-1)/2 on every side; even s pads one more on the top and left
    (mmseg ``DCM``)."""
    b, c, h, w = x.shape
    s = kernels.shape[-1]
    pad = (s - 1) // 2
    extra = (s - 1) % 2
    weight = kernels.reshape(b * c, 1, s, s)
    if not extra:  # symmetric: the convolution pads (no padded copy of x, as big as x)
        return F.conv2d(x.reshape(1, b * c, h, w), weight, padding=pad, groups=b * c).reshape(b, c, h, w)
    padded = F.pad(x, (pad + extra, pad, pad + extra, pad))
    out = F.conv2d(padded.reshape(1, b * c, h + s - 1, w + s - 1), weight, groups=b * c)
    return out.reshape(b, c, h, w)


class DynamicConvModule(nn.Module):
    """One DCM with filter size s: ``ReLU(BN(dwconv(CBR_1x1(X), conv1x1(AdaptiveAvgPool_s(X)))))``.

    ``filter_gen`` (1x1 conv C -> c with bias) reads the s x s pooled input and gives one s x s
    kernel per channel and sample; ``reduce`` (1x1 ConvBNReLU C -> c) gives the features it is
    applied to; ``fusion`` adds a 1x1 ConvBNReLU. MACs: ``C c s^2 + C c N + c s^2 N (+ c^2 N)``.
    """

    def __init__(self, in_channels: int, channels: int, filter_size: int, fusion: bool = False) -> None:
        super().__init__()
        self.filter_size, self.channels, self.fusion = filter_size, channels, fusion
        self.filter_gen = nn.Conv2d(in_channels, channels, 1)
        self.reduce = ConvNormAct(in_channels, channels, 1)
        self.norm = BatchNorm2d(channels)
        self.fusion_conv = ConvNormAct(channels, channels, 1) if fusion else nn.Identity()

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        kernels = self.filter_gen(F.adaptive_avg_pool2d(x, self.filter_size))
        out = F.relu(self.norm(dynamic_depthwise_conv(self.reduce(x), kernels)))
        return self.fusion_conv(out), kernels

    def macs(self, in_channels: int, height: int, width: int) -> int:
        n, c, s2 = height * width, self.channels, self.filter_size ** 2
        return in_channels * c * s2 + in_channels * c * n + c * s2 * n + (c * c * n if self.fusion else 0)


@MODULES.register("dmnet", paper="He, Deng, Qiao, ICCV 2019 (DMNet)", family="pooling", order="O(N C c + N s^2 c)")
class DMNet(ContextModule):
    """Dynamic multi-scale filters: content-generated depthwise kernels of sizes (1, 3, 5, 7).

    For each filter size s a :class:`DynamicConvModule` (DCM) computes, with c = C / ``reduction``::

        G_s = conv1x1_{C->c}(AdaptiveAvgPool_s(X))      (B, c, s, s)   a depthwise kernel per sample
        X'  = CBR_1x1(X)                                (B, c, H, W)
        Y_s = ReLU(BN(depthwise_conv(X', G_s)))         zero padding ((s-1)/2; even s: one more top/left)

    and ``out = CBR_3x3(cat[X, Y_1, Y_3, Y_5, Y_7])`` with c output channels (``bottleneck=False``
    returns the concatenation, C + 4c channels). CBR = conv + BN + ReLU.

    Defaults (mmseg ``DMHead``, contributed by the paper's first author; there is no other official
    code): ``filter_sizes`` (1, 3, 5, 7), ``fusion=False`` (a further 1x1 CBR per DCM when True),
    reduction 4 (512 channels for a 2048-channel res5 input). Deviations: none in the function; the
    per-sample depthwise convolution folds the batch into the groups as mmseg does.
    ``return_attention`` gives the generated kernels ``filter_s`` (B, c, s, s) (float32).

    Cost (MACs, batch 1) per DCM: ``C c s^2 + C c N + c s^2 N`` (+ ``c^2 N`` with fusion); plus the
    bottleneck ``9 (C + len(sizes) c) c N``. Order O(N C c + N s^2 c): linear in N.
    """

    @checked()
    def __init__(
        self,
        in_channels: int,
        *,
        filter_sizes: Sequence[int] = (1, 3, 5, 7),
        reduction: int = 4,
        fusion: bool = False,
        bottleneck: bool = True,
    ) -> None:
        if not filter_sizes or any(int(s) < 1 for s in filter_sizes):
            raise ValueError(f"DMNet filter_sizes must be a non-empty sequence of ints >= 1, got {filter_sizes!r}")
        if reduction < 1:
            raise ValueError(f"DMNet reduction must be >= 1, got {reduction}")
        channels = max(in_channels // reduction, 1)
        cat_channels = in_channels + len(filter_sizes) * channels
        super().__init__(in_channels, channels if bottleneck else cat_channels)
        self.channels, self.filter_sizes = channels, tuple(int(s) for s in filter_sizes)
        self.dcms = nn.ModuleList(DynamicConvModule(in_channels, channels, s, fusion) for s in self.filter_sizes)
        self.bottleneck = ConvNormAct(cat_channels, channels, 3) if bottleneck else nn.Identity()

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        outs, factors = [x], {}
        for dcm in self.dcms:
            y, kernels = dcm(x)
            outs.append(y)
            if return_attention:
                factors[f"filter_{dcm.filter_size}"] = kernels.float() if kernels.dtype != torch.float64 else kernels
        cat = torch.cat(outs, dim=1)
        del outs, y  # the branch maps (the loop's last one too) are freed before the bottleneck conv
        out = self.bottleneck(cat)
        return (out, factors) if return_attention else out

    def flops(self, height: int, width: int) -> int:
        total = sum(dcm.macs(self.in_channels, height, width) for dcm in self.dcms)
        if isinstance(self.bottleneck, ConvNormAct):
            total += self.bottleneck.macs(height, width)
        return total
