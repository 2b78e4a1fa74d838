"""Deterministic synthetic weights for mmseg-layout state dicts (test support, numpy only).

The mmseg converter fixtures do not store weights: they store the key names and shapes of an
mmseg 1.2.2 model, and both the fixture script (``scripts/make_mmseg_fixtures.py``, run in a venv
with mmseg) and the tests regenerate the same values from the key name with an integer hash
(splitmix64), which is exact on every platform and every torch / numpy version.
"""

from __future__ import annotations

import math
import zlib
from typing import Dict, Iterable, Sequence, Tuple

import numpy as np
import torch

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _uniform(name: str, n: int) -> np.ndarray:
    """``n`` numbers in [0, 1) from the key ``name`` (splitmix64 over the element index)."""
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint64) + np.uint64(zlib.crc32(name.encode())) * np.uint64(0x9E3779B97F4A7C15)
        x = x & _M64
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def synth_tensor(key: str, shape: Sequence[int], dtype: str = "float32") -> torch.Tensor:
    """The value of ``key``: fan-in scaled weights, BN scales/variances in [0.5, 1.5), small shifts."""
    n = int(np.prod(shape)) if len(shape) else 1
    if dtype == "int64":
        return torch.zeros(tuple(shape), dtype=torch.int64)
    u = _uniform(key, n)
    leaf = key.rsplit(".", 1)[-1]
    if leaf in ("running_var",) or (leaf == "weight" and len(shape) == 1):
        v = 0.5 + u
    elif leaf in ("running_mean", "bias"):
        v = (u - 0.5) * 0.4
    elif len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        v = (u - 0.5) * 2.0 * math.sqrt(3.0 / fan_in)
    else:  # scalars such as DANet / CCNet gamma
        v = 0.3 + u
    return torch.from_numpy(v.reshape(tuple(shape)).astype(dtype))


def synth_state_dict(keys: Iterable[Tuple[str, Sequence[int], str]]) -> Dict[str, torch.Tensor]:
    return {k: synth_tensor(k, shape, dtype) for k, shape, dtype in keys}


def synth_input(name: str, size: Sequence[int], batch: int = 1) -> torch.Tensor:
    """A normalised image batch (B, 3, H, W) in float64, values in [-2, 2)."""
    shape = (batch, 3, int(size[0]), int(size[1]))
    return torch.from_numpy((_uniform(f"input:{name}:{size[0]}x{size[1]}", int(np.prod(shape))) * 4 - 2)
                            .reshape(shape))
