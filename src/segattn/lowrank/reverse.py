"""Reverse mappers: K nodes -> pixels (the ``M_rev`` (N, K) of spec 1.2).

Called as ``reverse(nodes, result, x, return_matrix=False)`` with ``nodes`` (B, C, K) (reasoned node
features), ``result`` the mapper's ``MapResult`` and ``x`` (B, C_x, H, W) the reverse map's input
(queries; its H, W give the output size). Returns ``y`` (B, C, H, W) computed in at least float32
(cast back by the block), and with ``return_matrix`` also ``M_rev`` (B, N, K) (float32/float64).
Each has ``macs(height, width, num_nodes, channels)`` (batch 1).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import NON_NEGATIVE, checked
from segattn.lowrank.functional import check_normalization, flatten, normalize, upsampling_matrix
from segattn.lowrank.mappers import MapResult, _proj_macs
from segattn.ops.attention import full_precision, upcast

ReverseOutput = Tuple[Tensor, Optional[Tensor]]


def distribute(nodes: Tensor, rev_t: Tensor, size: Tuple[int, int]) -> Tensor:
    """``nodes`` (B, C, K) @ ``rev_t`` (B, K, N) -> (B, C, H, W)."""
    with full_precision(rev_t.device):
        y = torch.matmul(upcast(nodes).to(rev_t.dtype), rev_t)
    return y.reshape(y.shape[0], y.shape[1], size[0], size[1])


class TransposeReverse(nn.Module):
    """``M_rev = normalize_K(assignment)^T``: the mapper's own assignment, transposed (tied maps).

    ``normalize="none"`` gives GloRe's ``B^T`` and EMANet's ``Z`` (the EM mapper's assignment is
    already a softmax over K); ``"softmax"`` treats the assignment as logits (softmax over K);
    ``"sum"`` / ``"l2"`` normalise over K (Beyond Grids, LatentGNN symmetric). MACs: ``N K C``.
    """

    @checked(eps=NON_NEGATIVE)
    def __init__(self, normalize: str = "none", eps: float = 1e-6) -> None:
        super().__init__()
        self.normalize = check_normalization(normalize, ("none", "softmax", "sum", "l2"))
        self.eps = eps

    def forward(self, nodes: Tensor, result: MapResult, x: Tensor, return_matrix: bool = False) -> ReverseOutput:
        with full_precision(x.device):
            rev_t = normalize(upcast(result.assignment), 1, self.normalize, self.eps)
        y = distribute(nodes, rev_t, (x.shape[2], x.shape[3]))
        return y, (rev_t.transpose(1, 2) if return_matrix else None)

    def macs(self, height: int, width: int, num_nodes: int, channels: int) -> int:
        return height * width * num_nodes * channels

    def extra_repr(self) -> str:
        return f"normalize={self.normalize!r}"


class ProjectionReverse(nn.Module):
    """A separate learned map ``M_rev = normalize_K(proj(x))^T`` (A2 distribute, LatentGNN, APCNet).

    ``proj`` defaults to ``Conv2d(in_channels, num_nodes, 1, bias=bias)``; ``normalize`` =
    ``"softmax"`` (A2: each pixel's weights sum to 1 over the K nodes), ``"none"``, ``"l2"``
    (LatentGNN) or ``"sigmoid"`` (APCNet). MACs: ``C_x K N`` (projection) + ``N K C`` (distribution).
    """

    @checked(eps=NON_NEGATIVE)
    def __init__(
        self,
        in_channels: int,
        num_nodes: int,
        normalize: str = "softmax",
        *,
        bias: bool = True,
        proj: Optional[nn.Module] = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.normalize = check_normalization(normalize, ("none", "softmax", "l2", "sigmoid", "sum"))
        self.in_channels, self.num_nodes, self.eps = in_channels, num_nodes, eps
        self.proj = proj if proj is not None else nn.Conv2d(in_channels, num_nodes, 1, bias=bias)

    def forward(self, nodes: Tensor, result: MapResult, x: Tensor, return_matrix: bool = False) -> ReverseOutput:
        projected = flatten(self.proj(x))
        with full_precision(x.device):
            rev_t = normalize(upcast(projected), 1, self.normalize, self.eps)
        y = distribute(nodes, rev_t, (x.shape[2], x.shape[3]))
        return y, (rev_t.transpose(1, 2) if return_matrix else None)

    def macs(self, height: int, width: int, num_nodes: int, channels: int) -> int:
        proj = _proj_macs(self.proj, self.in_channels, self.num_nodes, height, width)
        return proj + height * width * num_nodes * channels

    def extra_repr(self) -> str:
        return f"normalize={self.normalize!r}"


class UpsampleReverse(nn.Module):
    """Bilinear upsampling of a node grid back to H x W (PPM branch, ``M_rev = U_b``).

    Needs a mapper with one grid (``result.grid``, e.g. ``GridPoolingMapper(b)``); ``M_rev`` (N, b^2)
    is the interpolation matrix (rows sum to 1). ``align_corners`` as ``F.interpolate``. No MACs
    (interpolation is not counted).
    """

    @checked()
    def __init__(self, align_corners: bool = False) -> None:
        super().__init__()
        self.align_corners = align_corners

    def forward(self, nodes: Tensor, result: MapResult, x: Tensor, return_matrix: bool = False) -> ReverseOutput:
        if result.grid is None:
            raise ValueError("UpsampleReverse needs a mapper with a single pooling grid (e.g. GridPoolingMapper(b))")
        grid, size = result.grid, (x.shape[2], x.shape[3])
        cells = upcast(nodes).reshape(nodes.shape[0], nodes.shape[1], grid[0], grid[1])
        y = F.interpolate(cells, size=size, mode="bilinear", align_corners=self.align_corners)
        if not return_matrix:
            return y, None
        mat = upsampling_matrix(size, grid, self.align_corners, x.device, y.dtype)
        return y, mat.unsqueeze(0).expand(x.shape[0], -1, -1)

    def macs(self, height: int, width: int, num_nodes: int, channels: int) -> int:
        return 0

    def extra_repr(self) -> str:
        return f"align_corners={self.align_corners}"
