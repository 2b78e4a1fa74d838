"""Shape helpers and normalisations shared by the low-rank parts.

Layout used throughout ``segattn.lowrank``: a feature map ``x`` is (B, C, H, W) and its flattened
view (B, C, N) with N = H * W; a map from pixels to K nodes is (B, K, N) (row k = the weights node k
gives the N pixels); node features are (B, C, K) (one column per node); a reverse map is (B, N, K).
"""

from __future__ import annotations

from typing import List, Literal, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

Normalization = Literal["none", "softmax", "sum", "l2", "mean", "sigmoid"]
NORMALIZATIONS = ("none", "softmax", "sum", "l2", "mean", "sigmoid")
Grid = Tuple[int, int]


def check_normalization(mode: str, allowed: Sequence[str] = NORMALIZATIONS) -> str:
    """Return ``mode`` or raise ``ValueError`` listing the allowed names."""
    if mode not in allowed:
        raise ValueError(f"unknown normalisation {mode!r}; expected one of {', '.join(allowed)}")
    return mode


def normalize(t: Tensor, dim: int, mode: str, eps: float = 1e-6) -> Tensor:
    """Normalise ``t`` along ``dim``.

    ``none``: unchanged; ``softmax``: softmax (``t`` are logits); ``sum``: divide by ``eps + sum``
    (``t`` non-negative); ``l2``: divide by ``max(||t||_2, eps)``; ``mean``: divide by the size of
    ``dim``; ``sigmoid``: element-wise sigmoid (no coupling along ``dim``, as APCNet).
    """
    if mode == "none":
        return t
    if mode == "softmax":
        return torch.softmax(t, dim=dim)
    if mode == "sum":
        return t / (eps + t.sum(dim=dim, keepdim=True))
    if mode == "l2":
        return F.normalize(t, p=2.0, dim=dim, eps=eps)
    if mode == "mean":
        return t / t.shape[dim]
    if mode == "sigmoid":
        return torch.sigmoid(t)
    raise ValueError(f"unknown normalisation {mode!r}; expected one of {', '.join(NORMALIZATIONS)}")


def flatten(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, N); a copy only when ``x`` is not contiguous (e.g. channels_last)."""
    return x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3])


def as_grid(bins: Union[int, Sequence[int]]) -> Grid:
    """``b`` -> (b, b); ``(bh, bw)`` unchanged; validates positivity."""
    grid = (bins, bins) if isinstance(bins, int) else tuple(bins)
    if len(grid) != 2 or any((not isinstance(b, int)) or b < 1 for b in grid):
        raise ValueError(f"a pooling grid is a positive int or a pair of positive ints, got {bins!r}")
    return grid[0], grid[1]


def pooling_matrix_1d(size: int, bins: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(bins, size) matrix of ``adaptive_avg_pool1d``: row i averages [floor(i s/b), ceil((i+1) s/b))."""
    pos = torch.arange(size, device=device)
    rows: List[Tensor] = []
    for i in range(bins):
        start, end = (i * size) // bins, -((-(i + 1) * size) // bins)
        inside = (pos >= start) & (pos < end)
        rows.append(inside.to(dtype) / float(end - start))
    return torch.stack(rows)


def pooling_matrix(size: Grid, grid: Grid, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(bh * bw, H * W) matrix ``P`` with ``P @ x.flatten() == adaptive_avg_pool2d(x, grid).flatten()``."""
    ph = pooling_matrix_1d(size[0], grid[0], device, dtype)
    pw = pooling_matrix_1d(size[1], grid[1], device, dtype)
    outer = ph[:, None, :, None] * pw[None, :, None, :]
    return outer.reshape(grid[0] * grid[1], size[0] * size[1])


def upsampling_matrix(size: Grid, grid: Grid, align_corners: bool, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(H * W, bh * bw) matrix ``U`` of bilinear interpolation from a ``grid`` to ``size``."""
    k = grid[0] * grid[1]
    eye = torch.eye(k, device=device, dtype=dtype).reshape(k, 1, grid[0], grid[1])
    up = F.interpolate(eye, size=size, mode="bilinear", align_corners=align_corners)
    return up.reshape(k, size[0] * size[1]).transpose(0, 1)
