"""GloRe's graph-based global reasoning unit, built from ``segattn.lowrank`` parts."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from torch import Tensor, nn

from segattn.checks import checked
from segattn.layers import BatchNorm2d
from segattn.lowrank import GraphConvReasoner, LowRankBlock, ProjectionMapper, TransposeReverse
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.weightmaps import operator_row
from segattn.registry import MODULES


@MODULES.register(
    "glore", paper="Chen et al., CVPR 2019 (GloRe)", family="lowrank", order="O(N C' K + K^2 C' + K C'^2)"
)
class GloRe(ContextModule):
    """Graph-based global reasoning unit (Chen, Rohrbach, Yan, Yan, Feng, Kalantidis, CVPR 2019), spec 3.11.

    With ``X`` (C, N), state ``X_s = conv_state(X)`` (C_s, N) and projection ``B = conv_proj(X)``
    (K, N) (1x1 convs with bias; B is **not** normalised and re-used for the reprojection)::

        V   = X_s B^T  [/ N if normalize]                  (C_s, K)   pixels -> nodes
        Z   = W_g ReLU(V + V A^T + b)                      (C_s, K)   graph conv: node-wise, then channel-wise
        Y   = Z B                                          (C_s, N)   nodes -> pixels
        out = x + BN(conv_extend(Y))                       (C, H, W)

    i.e. ``LowRankBlock(ProjectionMapper(C, K, "none"), GraphConvReasoner(K, C_s), TransposeReverse())``
    applied to ``value = X_s`` (spec 1.2); ``block.mapper.proj`` is ``conv_proj``. Defaults (official
    ratios): C_s = ``state_channels`` = C / 4, K = ``num_nodes`` = C / 8, ``normalize=False`` (official:
    V sums over the N pixels, so the context grows with N -- x4 from a 512x1024 crop to a 1024x2048
    image; evaluate at the training size, as the shipped configs do with slide windows, or set
    ``normalize=True`` (V / N) when train and test sizes must differ), BN eps 1e-4. ``zero_init=True`` zero-initialises the BN gamma (the
    official code's comment says it "should be zero initialized" but leaves that to the caller), so
    the unit starts as the identity. Cost: ``N C (C_s + K)`` projections + ``2 N C_s K`` projection and
    reprojection + ``K^2 C_s + K C_s^2`` graph conv + ``N C_s C`` output MACs; memory O(N K).
    ``return_attention`` returns the block's factors (``map`` = B (or B / N), ``reverse`` = B^T).
    """

    @checked()
    def __init__(
        self,
        in_channels: int,
        *,
        state_channels: Optional[int] = None,
        num_nodes: Optional[int] = None,
        normalize: bool = False,
        zero_init: bool = True,
    ) -> None:
        super().__init__(in_channels)
        c = in_channels
        self.state_channels = state_channels if state_channels is not None else max(1, c // 4)
        self.num_nodes = num_nodes if num_nodes is not None else max(1, c // 8)
        s, k = self.state_channels, self.num_nodes
        self.conv_state = nn.Conv2d(c, s, 1)
        mapper = ProjectionMapper(c, k, "mean" if normalize else "none")
        self.block = LowRankBlock(mapper, GraphConvReasoner(k, s), TransposeReverse())
        self.conv_extend = nn.Conv2d(s, c, 1, bias=False)
        self.blocker = BatchNorm2d(c, eps=1e-4)
        if zero_init:
            nn.init.zeros_(self.blocker.weight)

    def reconstruct(self, x: Tensor, return_factors: bool = False) -> ModuleOutput:
        """``Y = Z B`` (B, C_s, H, W) before ``conv_extend`` (and its factors on request)."""
        return self.block(x, value=self.conv_state(x), return_factors=return_factors)

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        if return_attention:
            y, factors = self.reconstruct(x, return_factors=True)
            return x + self.blocker(self.conv_extend(y)), factors
        return x + self.blocker(self.conv_extend(self.reconstruct(x)))

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """Row ``query`` of ``B^T B`` (the reasoner left out; B unnormalised): not convex."""
        return {"M_rev M_map": operator_row(factors["reverse"], factors["map"], size, query)}, False

    def flops(self, height: int, width: int) -> int:
        n, c, s = height * width, self.in_channels, self.state_channels
        return n * c * s + self.block.macs(height, width, s) + n * s * c
