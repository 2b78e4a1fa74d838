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


def live_maps_before(module: nn.Module, submodule: nn.Module, x: torch.Tensor) -> float:
    """Tensor bytes allocated in an eval forward of ``module(x)`` and still live when ``submodule`` is
    called, in units of ``x`` (``PeakLiveRecorder.current`` at its forward pre-hook): what a
    step holds beside that layer's own workspace, which the peak-RSS benchmarks add on top."""
    from segattn.bench.tensors import PeakLiveRecorder

    seen = []
    with torch.no_grad(), PeakLiveRecorder() as rec:
        handle = submodule.register_forward_pre_hook(lambda mod, args: seen.append(rec.current))
        try:
            module.eval()(x)
        finally:
            handle.remove()
    return seen[0] / (x.numel() * x.element_size())
