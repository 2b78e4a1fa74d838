"""Shared test utilities (importable as ``tests.helpers`` or ``helpers``)."""

from __future__ import annotations

import torch
from torch import nn


def perturb_(module: nn.Module, std: float = 0.5, seed: int = 0) -> nn.Module:
    """Give every all-zero parameter (zero-initialised gates, outputs, BN gammas) random values.

    The spec's zero-initialised residual gates make a fresh module the identity; tests of information
    flow, gradients and identities need the context path switched on.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() and torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * std)
    return module


def naive_bilinear(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """Zero-padded bilinear sample of ``img`` (C, H, W) at real (y, x), as a plain loop (test reference)."""
    import math

    h, w = img.shape[-2:]
    y0, x0 = math.floor(y), math.floor(x)
    val = torch.zeros(img.shape[0], dtype=img.dtype)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                val = val + wy * wx * img[:, yy, xx]
    return val
