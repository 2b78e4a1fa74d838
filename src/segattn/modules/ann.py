"""ANN asymmetric non-local blocks (Zhu, Xu, Bai, Huang, Bai, ICCV 2019): ``ann_apnb``, ``ann_afnb``.

Both attend from every pixel to S = sum s^2 pyramid-pooled anchors (110 for sizes (1, 3, 6, 8)),
reusing OCNet's :class:`~segattn.modules.ocnet.SelfAttentionUnit` with ``key_pool_sizes``.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from segattn.checks import DROPOUT, checked
from segattn.layers import ConvNormAct
from segattn.modules.base import Attention, ContextModule, ModuleOutput, check_feature_map
from segattn.modules.ocnet import BaseOC, SelfAttentionUnit, unit_maps
from segattn.registry import MODULES

PAPER = "Zhu, Xu, Bai, Huang, Bai, ICCV 2019"
POOL_SIZES = (1, 3, 6, 8)


def _default(value: Optional[int], fallback: int) -> int:
    return max(1, fallback) if value is None else value


@MODULES.register("ann_apnb", paper=PAPER, family="pairwise", order="O(N S C), S = 110")
class APNB(BaseOC):
    """ANN asymmetric pyramid non-local block: ``out = Dropout(ConvBNReLU_{2C -> C_out}([ctx ; X]))``.

    Shapes: X (B, C, H, W), N = H*W. Shared key/query = 1x1 conv C -> C_k (bias) -> BN -> ReLU (the
    official code shares them, MendelXu/ANN #1/#16/#18), value 1x1 conv C -> C_v; keys and values are
    pyramid-pooled after projection (adaptive average pooling to ``pool_sizes`` (1, 3, 6, 8), flattened:
    S = 110 anchors, no convs); ``A = softmax_S(C_k^{-1/2} q k^T)`` (N x S, shared fused kernel);
    ctx = W (A v) with W: 1x1 conv C_v -> C, weight and bias zero-initialised (ctx = 0 at init);
    concat [ctx, X] (2C) -> 1x1 conv -> BN -> ReLU to ``out_channels`` (default C) -> Dropout2d(0.05).
    Defaults (official APNB on 512 channels): C_k = C_v = C/2, pool_sizes (1, 3, 6, 8), dropout 0.05.
    With pool sizes equal to the map size (adaptive pooling = identity, S = N) it is OCNet base-OC's
    dense self-attention (spec 1.10). mmseg deviates with dropout 0.1 in the decode head.
    Cost (MACs, batch 1): N C (C_k + C_v) + N S (C_k + C_v) + N C_v C + 2 N C C_out; order O(N S C).
    """

    @checked(dropout=DROPOUT)
    def __init__(
        self,
        in_channels: int,
        *,
        key_channels: Optional[int] = None,
        value_channels: Optional[int] = None,
        out_channels: Optional[int] = None,
        pool_sizes: Sequence[int] = POOL_SIZES,
        dropout: float = 0.05,
        act: Optional[str] = "relu",
    ) -> None:
        super().__init__(
            in_channels, key_channels=key_channels, value_channels=value_channels, out_channels=out_channels,
            dropout=dropout, act=act, key_pool_sizes=pool_sizes,
        )


@MODULES.register("ann_afnb", paper=PAPER, family="pairwise", order="O(N S C), S = 110")
class AFNB(ContextModule):
    """ANN asymmetric fusion non-local block: high-level queries attend to pooled low-level anchors.

    Two-input form ``forward(x, low=L)``: x = high-level map (B, C, H, W) (res5), L = low-level map
    (B, C_low, H_l, W_l) (res4; any spatial size, its anchors are pooled). query = 1x1 conv C -> C_k
    (bias) -> BN -> ReLU of x; key = pyramid-pool(1x1 conv C_low -> C_k -> BN -> ReLU of L); value =
    pyramid-pool(1x1 conv C_low -> C_v of L) with ``pool_sizes`` (1, 3, 6, 8) -> S = 110 anchors;
    ``A = softmax_S(C_k^{-1/2} q k^T)`` (N x S); ctx = W (A v), W: 1x1 conv C_v -> C zero-initialised;
    out = Dropout2d(0.05)(BN(conv1x1_{2C -> C_out}([ctx ; x]))) — BN **without** activation, as the
    official code. One-input form ``forward(x)`` (the module contract): L = x, which needs
    ``low_channels`` == ``in_channels`` (the default). Defaults relative to C (official: 2048 high,
    1024 low, 256 key/value): C_k = C_v = C/8, low_channels C, out_channels C. Separate (not shared)
    key and query projections. Cost (MACs, batch 1): N C C_k + M C_low (C_k + C_v) + N S (C_k + C_v) +
    N C_v C + 2 N C C_out (M = H_l W_l); order O(N S C).
    """

    @checked(dropout=DROPOUT)
    def __init__(
        self,
        in_channels: int,
        *,
        low_channels: Optional[int] = None,
        key_channels: Optional[int] = None,
        value_channels: Optional[int] = None,
        out_channels: Optional[int] = None,
        pool_sizes: Sequence[int] = POOL_SIZES,
        dropout: float = 0.05,
        act: Optional[str] = "relu",
    ) -> None:
        super().__init__(in_channels, _default(out_channels, in_channels))
        self.low_channels = _default(low_channels, in_channels)
        kc, vc = _default(key_channels, in_channels // 8), _default(value_channels, in_channels // 8)
        self.attention = SelfAttentionUnit(
            in_channels, kc, vc, in_channels, source_channels=self.low_channels, share_key_query=False, act=act,
            key_pool_sizes=pool_sizes,
        )
        self.bottleneck = ConvNormAct(2 * in_channels, self.out_channels, 1, act=None)
        self.dropout = nn.Dropout2d(dropout)

    def _check_low(self, x: Tensor, low: Optional[Tensor]) -> Tensor:
        if low is None:
            if self.low_channels != self.in_channels:
                raise ValueError(
                    f"AFNB was built with low_channels={self.low_channels} != in_channels={self.in_channels}; "
                    "pass the low-level map as forward(x, low=...)"
                )
            return x
        check_feature_map(low, self.low_channels, "AFNB low-level input")
        if low.shape[0] != x.shape[0]:
            raise ValueError(f"AFNB inputs differ in batch size: {x.shape[0]} (x) vs {low.shape[0]} (low)")
        return low

    def forward(self, x: Tensor, low: Optional[Tensor] = None, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        source = self._check_low(x, low)
        ctx, weights = self.attention(x, source=source, return_attention=return_attention)
        y = self.dropout(self.bottleneck(torch.cat([ctx, x], dim=1)))
        return (y, {"attention": weights, "context": ctx}) if return_attention else y

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int],
                    low: Optional[Tensor] = None) -> Tuple[Dict[str, Tensor], bool]:
        """Weights of the high-level query pixel over the low-level map's pixels (``low``, the forward's
        second input; the query map's own size when not given), through the pooled anchors."""
        source = tuple(low.shape[-2:]) if low is not None else size
        return unit_maps(self.attention, factors["attention"], size, source, query)

    def flops(self, height: int, width: int, low_size: Optional[Tuple[int, int]] = None) -> int:
        """MACs (batch 1) for a high-level map ``height x width`` and a low-level map ``low_size``
        (default the same size)."""
        low_size = low_size or (height, width)
        return self.attention.macs(height, width, low_size) + self.bottleneck.macs(height, width)
