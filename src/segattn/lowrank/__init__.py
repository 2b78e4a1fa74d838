"""Composable low-rank reconstruction: map pixels to K nodes, reason among them, map back.

Every low-rank context module computes ``Y = M_rev f(M_map X)`` (spec 1.2) with ``M_map`` (K, N),
a node function ``f`` and ``M_rev`` (N, K). ``segattn.lowrank`` offers each step as a small module:

* mappers (``x`` (B, C, H, W) -> ``MapResult(map (B, K, N), nodes (B, C_v, K), assignment, ...)``):
  ``GridPoolingMapper`` (fixed adaptive-pooling grids, PPM), ``ProjectionMapper`` (learned 1x1
  conv, softmax over pixels or not), ``EMMapper`` (EM iterations, EMANet), ``PyramidAnchorMapper``
  (pyramid-pooled anchors), ``GaussianAnchorMapper`` (learned anchors, Beyond Grids),
  ``MatrixDecompositionMapper`` (NMF / VQ / CD iterations, Hamburger);
* reasoners ((B, C, K) -> (B, C', K)): ``IdentityReasoner``, ``GraphConvReasoner`` (GloRe),
  ``NodeAttentionReasoner`` (LatentGNN);
* reverse mappers (nodes -> (B, C', H, W)): ``TransposeReverse`` (the mapper's own assignment),
  ``ProjectionReverse`` (a separate learned map), ``UpsampleReverse`` (bilinear grid);
* ``LowRankBlock(mapper, reasoner, reverse)`` wires them and returns the factors on request;
* ``call_step_hooks(model)`` runs ``after_optimizer_step()`` (EMA bases) after each optimiser step.

Example: a new module with 32 learned nodes (softmax over pixels), a graph convolution among them
and a separate softmax-over-nodes reverse map::

    import torch
    from segattn.lowrank import LowRankBlock, ProjectionMapper, GraphConvReasoner, ProjectionReverse

    block = LowRankBlock(
        ProjectionMapper(64, 32, normalize="softmax"),   # M_map: (B, 32, N), rows sum to 1 over pixels
        GraphConvReasoner(32, 64),                        # f: node-wise then channel-wise graph conv
        ProjectionReverse(64, 32, normalize="softmax"),  # M_rev: (B, N, 32), rows sum to 1 over nodes
    )
    x = torch.randn(2, 64, 33, 45)
    y, factors = block(x, return_factors=True)            # y: (2, 64, 33, 45)
    operator = factors["reverse"] @ factors["map"]        # N x N, rank <= 32 (with f = identity)
    cost = block.macs(33, 45, 64)                         # multiply-accumulates, batch 1

EMANet's reconstruction is ``LowRankBlock(EMMapper(C, 64, 3), None, TransposeReverse())``, A2 is
``LowRankBlock(ProjectionMapper(C, n), None, ProjectionReverse(C, n))`` applied to ``value = W_phi x``,
GloRe is ``LowRankBlock(ProjectionMapper(C, K, "none"), GraphConvReasoner(K, C_s), TransposeReverse())``
applied to ``value = conv_state(x)``, and a PPM branch is ``LowRankBlock(GridPoolingMapper(b),
GraphConvReasoner(b * b, C, C_b), UpsampleReverse())`` (any
(B, C, K) -> (B, C', K) module with ``macs(num_nodes, channels)`` can be the reasoner).
"""

from segattn.lowrank.block import LowRankBlock
from segattn.lowrank.decomposition import MatrixDecompositionMapper
from segattn.lowrank.hooks import call_step_hooks
from segattn.lowrank.mappers import (
    EMMapper,
    GaussianAnchorMapper,
    GridPoolingMapper,
    MapResult,
    ProjectionMapper,
    PyramidAnchorMapper,
    aggregate,
    em_step,
)
from segattn.lowrank.reasoners import GraphConvReasoner, IdentityReasoner, NodeAttentionReasoner
from segattn.lowrank.reverse import ProjectionReverse, TransposeReverse, UpsampleReverse

__all__ = [
    "LowRankBlock",
    "call_step_hooks",
    "MapResult",
    "GridPoolingMapper",
    "ProjectionMapper",
    "EMMapper",
    "PyramidAnchorMapper",
    "GaussianAnchorMapper",
    "MatrixDecompositionMapper",
    "aggregate",
    "em_step",
    "IdentityReasoner",
    "GraphConvReasoner",
    "NodeAttentionReasoner",
    "TransposeReverse",
    "ProjectionReverse",
    "UpsampleReverse",
]
