"""Beyond Grids / GraphRep (Li & Gupta, NeurIPS 2018), spec section 3.10, built from ``segattn.lowrank`` parts."""

from __future__ import annotations

from typing import Dict, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import checked
from segattn.lowrank import GaussianAnchorMapper, LowRankBlock, NodeAttentionReasoner, TransposeReverse
from segattn.modules.base import Attention, ContextModule, ModuleOutput
from segattn.ops.attention import full_precision, upcast
from segattn.ops.weightmaps import operator_row
from segattn.registry import MODULES


class SimilarityGraphConvReasoner(nn.Module):
    """Graph convolution with a data-dependent adjacency from vertex similarity (Beyond Grids step 2).

    ``Z`` (B, C, K) -> ``l2norm_C`` (``normalize_nodes``) -> ``Z A^T`` with ``A = softmax_rows(Zhat^T Zhat)``
    (``segattn.lowrank.NodeAttentionReasoner``) -> ``ReLU(W_g .)`` with ``W_g`` a 1x1 Conv1d over
    channels (C -> C_out, no bias). (B, C, K) -> (B, C_out, K). MACs: ``2 K^2 C + C C_out K``.
    """

    def __init__(self, channels: int, out_channels: int, normalize_nodes: bool = True) -> None:
        super().__init__()
        self.channels, self.out_channels, self.normalize_nodes = channels, out_channels, normalize_nodes
        self.adjacency = NodeAttentionReasoner(scale=1.0, normalize=True)
        self.weight = nn.Conv1d(channels, out_channels, 1, bias=False)

    def forward(self, nodes: Tensor) -> Tensor:
        with full_precision(nodes.device):  # the norm in float32, also under autocast / half weights
            z = F.normalize(upcast(nodes), dim=1, eps=1e-6).to(nodes.dtype) if self.normalize_nodes else nodes
        return F.relu(self.weight(self.adjacency(z)))

    def macs(self, num_nodes: int, channels: int) -> int:
        return self.adjacency.macs(num_nodes, channels) + channels * self.out_channels * num_nodes


@MODULES.register("graphrep", paper="Li & Gupta, NeurIPS 2018 (Beyond Grids)", family="lowrank", order="O(N K C + K^2 C)")
class GraphRep(ContextModule):
    """Beyond Grids: project pixels onto K learned anchors, reason on the graph, re-project.

    With ``X`` (C, N), K anchors ``w_k`` and per-anchor, per-channel scales ``sigma_k`` (spec 3.10)::

        q_ik  = softmax_k(-1/2 ||(x_i - w_k) / sigma_k||^2)                 (N, K)  soft assignment
        z_k   = sum_i q_ik (x_i - w_k) / sigma_k / sum_i q_ik                (C, K)  vertex features
        Z~    = ReLU(W_g l2norm(Z) A^T),  A = softmax_rows(Zhat^T Zhat)      (C, K)  graph convolution
        x~_i  = sum_k q_ik z~_k,  out = X + X~                               (C, H, W) re-projection

    i.e. ``LowRankBlock(GaussianAnchorMapper(C, K), SimilarityGraphConvReasoner(C, C),
    TransposeReverse())`` from ``segattn.lowrank``: the map is the assignment normalised over pixels,
    the reverse map the same assignment (already normalised over anchors) transposed (tied maps).
    No official code exists; this follows the paper's equations as recalled in the spec: the vertex
    normalisation (``normalize_nodes``, L2 over channels) and the adjacency ``softmax(Zhat^T Zhat)``
    (cosine similarity) are our reading of "normalised" and "A = f(Z^T Z)". Defaults:
    ``num_anchors=32`` (unverified), anchors N(0, 1), ``log sigma = 0``. ``return_attention`` gives
    ``map`` (B, K, N), ``reverse`` (B, N, K), ``assignment``, ``nodes`` and ``reasoned``.

    Cost (MACs, batch 1): ``3 N K C`` (assignment and projection) + ``2 K^2 C + K C^2`` (graph conv)
    + ``N K C`` (re-projection); order O(N K C + K^2 C): linear in N.
    """

    @checked()
    def __init__(self, in_channels: int, *, num_anchors: int = 32, normalize_nodes: bool = True) -> None:
        super().__init__(in_channels)
        if num_anchors < 1:
            raise ValueError(f"GraphRep num_anchors must be >= 1, got {num_anchors}")
        self.num_anchors = num_anchors
        self.block = LowRankBlock(
            GaussianAnchorMapper(in_channels, num_anchors),
            SimilarityGraphConvReasoner(in_channels, in_channels, normalize_nodes),
            TransposeReverse("none"),
        )

    def forward(self, x: Tensor, return_attention: bool = False) -> ModuleOutput:
        self.check_input(x)
        if return_attention:
            y, factors = self.block(x, return_factors=True)
            return x + y, factors
        return x + self.block(x)

    def weight_maps(self, factors: Attention, size: Tuple[int, int], query: Tuple[int, int]) -> Tuple[Dict[str, Tensor], bool]:
        """Row ``query`` of ``M_rev M_map`` (anchor assignments normalised over anchors / pixels): convex."""
        return {"M_rev M_map": operator_row(factors["reverse"], factors["map"], size, query)}, True

    def flops(self, height: int, width: int) -> int:
        return self.block.macs(height, width, self.in_channels)
