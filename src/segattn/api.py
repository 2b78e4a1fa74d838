"""Factories behind the public names ``segattn.create_module`` etc."""

from __future__ import annotations

from typing import Any, Dict, List

from torch import nn

import segattn.modules  # noqa: F401  (registers every context module and upsampler)
from segattn.checks import checked
from segattn.registry import MODULES, UPSAMPLERS


@checked()
def list_modules(pattern: str = "*") -> List[str]:
    """Registered context-module names matching the shell-style ``pattern`` (sorted)."""
    return MODULES.list(pattern)


@checked()
def create_module(name: str, in_channels: int, **kwargs: Any) -> nn.Module:
    """Build context module ``name`` for ``in_channels`` input channels.

    Unknown names, unknown keywords and wrong argument values raise
    :class:`~segattn.errors.ArgumentError` (a ``ValueError`` and ``TypeError`` too) naming the argument,
    the value and what is accepted (the closest registered names, the accepted keywords).
    """
    return MODULES.create(name, in_channels, **kwargs)


@checked()
def module_info(name: str) -> Dict[str, Any]:
    """Metadata of a registered module: paper, family, cost order, class."""
    entry = MODULES.entry(name)
    return {"name": entry.name, "class": entry.factory.__name__, **entry.meta}


@checked()
def list_upsamplers(pattern: str = "*") -> List[str]:
    """Registered upsampler names (modules that change the spatial size, e.g. CARAFE)."""
    return UPSAMPLERS.list(pattern)


@checked()
def create_upsampler(name: str, in_channels: int, **kwargs: Any) -> nn.Module:
    """Build upsampler ``name``; returns (B, C, sH, sW) for (B, C, H, W) input."""
    return UPSAMPLERS.create(name, in_channels, **kwargs)
