"""What every peer case of ``benchmarks/peers.py`` shares: sizes, the case record, the mmcv-lite placeholder."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any, Callable, Tuple

NUM_CLASSES = 19
CHANNELS = 512


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "module", "head", "model" or "converted"
    note: str  # what is matched / where the layouts differ


def _hw(size: str) -> Tuple[int, int]:
    """``"97"`` -> (97, 97); ``"512x1024"`` -> (512, 1024)."""
    h, _, w = str(size).partition("x")
    return int(h), int(w or h)


def install_ext_placeholder() -> None:
    """Register ``mmcv._ext``: every attribute is a function that raises (mmcv-lite has no compiled ops)."""

    class _Ext(types.ModuleType):
        def __getattr__(self, name: str) -> Callable[..., Any]:
            if name.startswith("__"):
                raise AttributeError(name)

            def missing(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError(f"needs a compiled op (mmcv._ext.{name}; mmcv-lite has none)")

            return missing

    sys.modules.setdefault("mmcv._ext", _Ext("mmcv._ext"))


def one_level(head: Any) -> Any:
    """``head`` (a decode head) fed one feature level: a module mapping ``x`` to the list of the head's outputs
    (a dict's values, a tuple's items or the one tensor)."""
    import torch

    class OneLevel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def forward(self, x: Any) -> Any:
            out = self.head([x])
            if isinstance(out, dict):
                return list(out.values())
            return list(out) if isinstance(out, (tuple, list)) else [out]

    return OneLevel()
