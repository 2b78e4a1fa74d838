"""Precision probes shared by the contract and autocast tests.

:class:`HalfMathProbe` records every matrix product, softmax, normalisation, sigmoid, SDPA and
grid-sampling kernel that runs in float16/bfloat16. The modules' contract is that only their
convolutions (and element-wise layers) run in half precision, under ``module.to(half)`` and under
``torch.autocast``; logits, softmax and normalisations are float32 (``segattn.ops.full_precision``).
A probe sees the dispatched kernels, i.e. after autocast has chosen their dtype.
"""

from __future__ import annotations

from typing import Set

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HALF = (torch.float16, torch.bfloat16)
# kernels that must run in float32 (an aten overload packet name containing one of these)
CHECKED = (
    "mm", "bmm", "addmm", "baddbmm", "softmax", "log_softmax", "linalg_vector_norm", "sigmoid",
    "scaled_dot_product", "grid_sampler",
)


def _checked(name: str) -> bool:
    return name in CHECKED or any(key in name for key in ("softmax", "scaled_dot_product", "grid_sampler"))


class HalfMathProbe(TorchDispatchMode):
    """Context manager: ``probe.half_ops`` names the checked kernels that produced a half tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.half_ops: Set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if _checked(name):
            outs = out if isinstance(out, (tuple, list)) else (out,)
            if any(isinstance(o, torch.Tensor) and o.dtype in HALF for o in outs):
                self.half_ops.add(name)
        return out


def relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |y - ref| / max |ref|`` in float32."""
    return ((y.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-12)).item()
