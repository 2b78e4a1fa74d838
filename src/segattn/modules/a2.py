"""A2-Nets' double attention block, built from ``segattn.lowrank`` parts."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from torch import Tensor, nn

from segattn.checks import checked
from segattn.lowrank import LowRankBlock, ProjectionMapper, ProjectionReverse
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.weightmaps import operator_row
from segattn.registry import MODULES


@MODULES.register("a2", paper="Chen et al., NeurIPS 2018 (A2-Nets)", family="lowrank", order="O(N m n)")
class DoubleAttention(ContextModule):
    """Double attention block (Chen, Kalantidis, Li, Yan, Feng, NeurIPS 2018), spec 3.7.

    With ``X`` (C, N), ``A = W_phi X`` (m, N), ``B = W_theta X`` (n, N), ``V = W_rho X`` (n, N) (1x1
    convs with bias)::

        G   = A softmax_N(B)^T         (m, n)   gather: n descriptors, each a softmax over pixels
        Z   = G softmax_n(V)           (m, N)   distribute: each pixel's weights over the n descriptors
        out = x + W_out Z              (C, H, W)  (1x1 conv m -> C with bias, residual)

    i.e. ``LowRankBlock(ProjectionMapper(C, n, "softmax"), identity, ProjectionReverse(C, n,
    "softmax"))`` applied to ``value = A`` (spec 1.2); ``block.mapper.proj`` is theta,
    ``block.reverse.proj`` is rho. Defaults: m = n = C / ``reduction`` (4; the paper's reduction,
    [recalled]). No official code exists; implemented from the equations.

    ``gather_log_softmax=True`` replaces B by ``log_softmax_n(B)`` before the softmax over pixels; with
    ``W_phi = I``, ``W_theta = W_rho = mu0^T`` (no bias) the block then equals one EM iteration of
    EMANet exactly (spec 1.3); the paper's plain form (default False) differs by the per-pixel
    log-partition. Cost: ``N C (m + 2n)`` projections + ``2 N m n`` gather/distribute + ``N m C``
    output conv MACs; attention memory O(N n). ``return_attention`` returns the block's factors
    (``map`` = softmax_N(B) (B, n, N), ``reverse`` = softmax_n(V)^T (B, N, n), ``nodes`` = G).
    """

    @checked()
    def __init__(
        self,
        in_channels: int,
        *,
        mid_channels: Optional[int] = None,
        num_descriptors: Optional[int] = None,
        reduction: int = 4,
        gather_log_softmax: bool = False,
    ) -> None:
        super().__init__(in_channels)
        c = in_channels
        self.mid_channels = mid_channels if mid_channels is not None else max(1, c // reduction)
        self.num_descriptors = num_descriptors if num_descriptors is not None else max(1, c // reduction)
        m, n = self.mid_channels, self.num_descriptors
        self.phi = nn.Conv2d(c, m, 1)
        mapper = ProjectionMapper(c, n, "softmax", log_softmax_nodes=gather_log_softmax)
        self.block = LowRankBlock(mapper, None, ProjectionReverse(c, n, "softmax"))
        self.conv_out = nn.Conv2d(m, c, 1)

    def reconstruct(self, x: Tensor, return_factors: bool = False) -> ModuleOutput:
        """``Z = G softmax_n(V)`` (B, m, H, W) before the output conv (and its factors on request)."""
        return self.block(x, value=self.phi(x), return_factors=return_factors)

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        if return_attention:
            z, factors = self.reconstruct(x, return_factors=True)
            return x + self.conv_out(z), factors
        return x + self.conv_out(self.reconstruct(x))

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """Row ``query`` of ``M_rev M_map`` (softmax over descriptors times softmax over pixels): convex."""
        return {"M_rev M_map": operator_row(factors["reverse"], factors["map"], size, query)}, True

    def flops(self, height: int, width: int) -> int:
        n, c, m = height * width, self.in_channels, self.mid_channels
        return n * c * m + self.block.macs(height, width, m) + n * m * c
