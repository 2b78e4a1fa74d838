"""APCNet: adaptive pyramid context (He, Deng, Zhou, Wang, Qiao, CVPR 2019), spec section 3.13."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import checked
from segattn.layers import ConvNormAct
from segattn.lowrank import GridPoolingMapper, LowRankBlock, ProjectionReverse
from segattn.lowrank.functional import pooling_matrix
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.weightmaps import flat_index
from segattn.registry import MODULES


class NodeConvReasoner(nn.Module):
    """A per-node ``ConvNormAct`` (1x1 conv + BN + ReLU) on (B, C, K) node features -> (B, C_out, K).

    The nodes are viewed as a (B, C, K, 1) map, so BN statistics and the batch-1 rule are those of
    the same layer applied to the pooled s x s grid. MACs: ``C C_out K``.
    """

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.channels, self.out_channels = channels, out_channels
        self.conv = ConvNormAct(channels, out_channels)

    def forward(self, nodes: Tensor) -> Tensor:
        return self.conv(nodes.unsqueeze(-1)).squeeze(-1)

    def macs(self, num_nodes: int, channels: int) -> int:
        return channels * self.out_channels * num_nodes


class AdaptiveContextModule(nn.Module):
    """One ACM at scale ``s``: a learned N x s^2 sigmoid affinity reading s x s pooled cells.

    ``Y_s = CBR(pool_s(X))`` (s^2 x c), ``x = CBR(X)`` (c x N), ``g = CBR(GAP(x))`` (c x 1),
    ``alpha = sigmoid(W_a (x + g) + b)`` (N x s^2, not normalised), ``z = alpha Y_s`` (N x c),
    ``out = CBR_f(relu(CBR_r(z) + x))`` (``fusion``) where CBR = 1x1 conv + BN + ReLU.
    ``z`` is ``LowRankBlock(GridPoolingMapper(s), NodeConvReasoner(C, c), ProjectionReverse(c, s^2,
    "sigmoid"))`` with the reverse map reading ``x + g``.
    """

    def __init__(self, in_channels: int, channels: int, scale: int, fusion: bool = True) -> None:
        super().__init__()
        self.scale, self.channels, self.fusion = scale, channels, fusion
        self.input_conv = ConvNormAct(in_channels, channels)
        self.global_conv = ConvNormAct(channels, channels)
        self.block = LowRankBlock(
            GridPoolingMapper(scale),
            NodeConvReasoner(in_channels, channels),
            ProjectionReverse(channels, scale * scale, "sigmoid"),
        )
        self.residual_conv = ConvNormAct(channels, channels)
        self.fusion_conv = ConvNormAct(channels, channels) if fusion else nn.Identity()

    @property
    def pooled_conv(self) -> ConvNormAct:
        return self.block.reasoner.conv

    @property
    def gla(self) -> nn.Conv2d:
        return self.block.reverse.proj

    def context(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``(x_reduced (B, c, H, W), z (B, c, H, W), alpha (B, N, s^2))`` before the residual conv."""
        reduced = self.input_conv(x)
        guide = self.global_conv(F.adaptive_avg_pool2d(reduced, 1))
        z, factors = self.block(x, query=reduced + guide, return_factors=True)
        return reduced, z, factors["reverse"]

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        reduced, z, alpha = self.context(x)
        out = F.relu(self.residual_conv(z) + reduced)
        return self.fusion_conv(out), alpha

    def macs(self, in_channels: int, height: int, width: int) -> int:
        n, c = height * width, self.channels
        convs = in_channels * c * n + c * c + c * c * n * (2 if self.fusion else 1)
        return convs + self.block.macs(height, width, in_channels)


@MODULES.register("apcnet", paper="He et al., CVPR 2019", family="lowrank", order="O(N C C' + N s^2 C')")
class APCNet(ContextModule):
    """Adaptive pyramid context: ACMs at scales (1, 2, 3, 6) with global-guided sigmoid affinities.

    For each scale s an :class:`AdaptiveContextModule` computes, with c = C / reduction channels,
    ``Y_s = CBR(AdaptiveAvgPool_s(X))`` (s^2 x c), ``x = CBR(X)`` (c x N), the global guidance
    ``g = CBR(GAP(x))`` (c x 1, broadcast), the affinity ``alpha_s = sigmoid(conv1x1_{c->s^2}(x + g))``
    (N x s^2; sigmoid, not softmax, so rows need not sum to 1), ``z = alpha_s Y_s`` (N x c), then
    ``CBR_fuse(ReLU(CBR(z) + x))``. CBR = conv + BN + ReLU. The module output follows mmseg's APCHead
    (the official implementation, open-mmlab/mmsegmentation ``apc_head.py``):
    ``out = CBR_3x3(cat[X, ACM_1, ACM_2, ACM_3, ACM_6])`` with c output channels
    (``bottleneck=False`` returns the concatenation itself, C + 4c channels). Each ACM's ``alpha_s Y_s``
    is ``LowRankBlock(GridPoolingMapper(s), NodeConvReasoner(C, c), ProjectionReverse(c, s^2, "sigmoid"))``
    from ``segattn.lowrank`` (map = the s x s pooling matrix, reverse map = the sigmoid affinity).

    Defaults: pool scales (1, 2, 3, 6), ``fusion=True``, reduction 4 (512 channels for a 2048-channel
    res5 input, as mmseg). The global guidance is broadcast instead of bilinearly resized from 1x1
    (identical values). Affinity and aggregation run in float32 under float16/bfloat16 input.
    ``return_attention`` gives ``alpha_s`` (B, N, s^2) for each scale as ``affinity_s``.

    Cost (MACs, batch 1) per scale: ``C c (s^2 + N) + c^2 + c s^2 N + N s^2 c + 2 c^2 N``; plus the
    bottleneck ``9 (C + 4 c) c N``. Order O(N C c + N s^2 c): linear in N.
    """

    @checked()
    def __init__(
        self,
        in_channels: int,
        *,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        reduction: int = 4,
        fusion: bool = True,
        bottleneck: bool = True,
    ) -> None:
        if not pool_scales or any(int(s) < 1 for s in pool_scales):
            raise ValueError(f"APCNet pool_scales must be a non-empty sequence of ints >= 1, got {pool_scales!r}")
        channels = max(in_channels // reduction, 1)
        cat_channels = in_channels + len(pool_scales) * channels
        super().__init__(in_channels, channels if bottleneck else cat_channels)
        self.channels, self.pool_scales = channels, tuple(int(s) for s in pool_scales)
        self.acms = nn.ModuleList(AdaptiveContextModule(in_channels, channels, s, fusion) for s in self.pool_scales)
        self.bottleneck = ConvNormAct(cat_channels, channels, 3) if bottleneck else nn.Identity()

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        outs, factors = [x], {}
        for acm in self.acms:
            y, alpha = acm(x)
            outs.append(y)
            factors[f"affinity_{acm.scale}"] = alpha
        cat = torch.cat(outs, dim=1)
        del outs, y  # the branch outputs (the loop's last one too) are freed before the bottleneck conv
        out = self.bottleneck(cat)
        return (out, factors) if return_attention else out

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """Per scale s, the sigmoid affinity of the pixel to the s x s cells times the pooling: not convex."""
        maps: Dict[str, Tensor] = {}
        for s in self.pool_scales:
            alpha = factors[f"affinity_{s}"][0, flat_index(query, size[1])]
            maps[f"scale {s}"] = (alpha @ pooling_matrix(size, (s, s), alpha.device, alpha.dtype)).reshape(size)
        return maps, False

    def flops(self, height: int, width: int) -> int:
        total = sum(acm.macs(self.in_channels, height, width) for acm in self.acms)
        if isinstance(self.bottleneck, ConvNormAct):
            total += self.bottleneck.macs(height, width)
        return total
