"""Small pieces the modules' ``weight_maps`` hooks share (where a query pixel's weights land).

A context module that can say where a pixel looks defines, beside its forward::

    def weight_maps(self, factors, size, query) -> (maps, convex)

``factors`` are what ``module(x, return_attention=True)`` returned for one input (1, C, H, W),
``size`` = (H, W) the module's input, ``query`` = (y, x) a pixel already checked to lie inside the
map; ``maps`` (label -> (h, w) tensor on a grid spanning the feature map) are the weights of that
pixel over the value positions with the attention frozen, and ``convex`` says whether each map is
>= 0 and sums to 1 over the pixels it covers. ``segattn.viz.pixel_weights`` calls it; the viz tests
check each map against a Jacobian probe of the forward. Optional beside it: ``weight_query_size(size)``
(the grid the query lives on when it is not the input's, CARAFE's upsampled map) and the class
attribute ``no_pixel_weights`` (a sentence saying why a module has no such maps and what to use).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

from segattn.ops.sampling import window_offsets

Pair = Tuple[int, int]


def flat_index(query: Pair, width: int) -> int:
    """Row-major index of pixel ``query`` = (y, x) in a map of the given width."""
    return query[0] * width + query[1]


def onehot(index: int, n: int, like: Tensor) -> Tensor:
    """A length-``n`` vector of ``like``'s dtype and device, 1 at ``index``."""
    out = torch.zeros(n, dtype=like.dtype, device=like.device)
    out[index] = 1.0
    return out


def index_map(size: Pair, device: torch.device) -> Tensor:
    """(1, 1, H, W) float64 map whose value is the flat pixel index (to follow groupings exactly)."""
    return torch.arange(size[0] * size[1], device=device, dtype=torch.float64).reshape(1, 1, *size)


def window_map(weights: Tensor, centre: Pair, size: Pair, kernel: int, dilation: int = 1) -> Tensor:
    """Place k^2 window weights (row-major offsets) around ``centre``; taps outside the map are dropped."""
    out = torch.zeros(size, dtype=weights.dtype, device=weights.device)
    for t, (dy, dx) in enumerate(window_offsets(kernel, dilation)):
        y, x = centre[0] + dy, centre[1] + dx
        if 0 <= y < size[0] and 0 <= x < size[1]:
            out[y, x] += weights[t]
    return out


def splat(out: Tensor, y: float, x: float, value: Tensor) -> None:
    """Bilinear splat of ``value`` at real (y, x) onto ``out`` (H, W); taps outside are dropped."""
    y0, x0 = math.floor(y), math.floor(x)
    fy, fx = y - y0, x - x0
    for yy, wy in ((y0, 1.0 - fy), (y0 + 1, fy)):
        for xx, wx in ((x0, 1.0 - fx), (x0 + 1, fx)):
            if 0 <= yy < out.shape[0] and 0 <= xx < out.shape[1] and wy * wx != 0.0:
                out[yy, xx] += wy * wx * value


def operator_row(rev: Tensor, map_: Tensor, size: Pair, query: Pair) -> Tensor:
    """Row ``query`` of ``M_rev M_map``: (1, N, K) x (1, K, N) -> (H, W) without the N x N matrix."""
    return (rev[0, flat_index(query, size[1])] @ map_[0]).reshape(size)


__all__ = ["flat_index", "onehot", "index_map", "window_map", "splat", "operator_row"]
