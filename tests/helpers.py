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
