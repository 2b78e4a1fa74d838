"""Memory and time a benchmark step would take, estimated in a second before anything large runs.

Memory: the peak of live tensor bytes during one forward (a dispatch mode adds every new tensor's
bytes and subtracts them when it is freed) is measured on CPU at two small sizes of the same aspect
ratio, fitted by ``a * N ** k`` over the pixel count ``N`` (``1 <= k <= 2``: linear to quadratic
modules) and extrapolated; weights and the input are added exactly, a backward step counts three
forwards (saved activations and gradients). Time: the module's analytic MACs (times three with
backward) over this machine's matmul rate, times warm-up plus rounds. Both are rough (a small
factor; more for a module whose computation changes with the size, e.g. one that switches to chunks
of its attention), meant to refuse a run that cannot fit (``segattn bench --size 4096``) before it starts
and to say how long a feasible one will take.
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Set

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import segattn.modules  # noqa: F401  (registers every context module)
from segattn.bench.measure import BenchSetting, _dtype
from segattn.registry import MODULES

PROBE_SIDES = (16, 32)  # the long side of the two probe sizes


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of the tensors that ops create and that are still alive, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: Set[int] = set()

    def _free(self, nbytes: int, key: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t._base is None and id(t) not in self._seen:
                nbytes = t.numel() * t.element_size()
                self._seen.add(id(t))
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, nbytes, id(t))
        return out


def _forward_peak(module: torch.nn.Module, channels: int, height: int, width: int, dtype: torch.dtype) -> int:
    x = torch.randn(1, channels, height, width, dtype=dtype)
    tracker = _LiveBytes()
    with torch.no_grad(), tracker:
        module(x)
    return tracker.peak


@dataclass
class StepEstimate:
    name: str
    bytes: float  # peak memory of one step, weights and input included
    seconds: float  # the whole timed run: warm-up + rounds


def estimate_step(name: str, setting: BenchSetting, rate_gmacs: float) -> StepEstimate:
    """:class:`StepEstimate` of module ``name`` at ``setting`` (see the module docstring)."""
    dtype = _dtype(setting.dtype) if setting.device == "cpu" else torch.float32
    module = MODULES.create(name, setting.in_channels).to(dtype=dtype).eval()
    h, w = setting.height, setting.width
    scale = [s / max(h, w) for s in PROBE_SIDES]
    sizes = [(max(1, round(h * s)), max(1, round(w * s))) for s in scale]
    if sizes[0] == sizes[1] or max(h, w) <= PROBE_SIDES[1]:  # small enough to measure directly
        peak = float(_forward_peak(module, setting.in_channels, h, w, dtype))
    else:
        peaks = [_forward_peak(module, setting.in_channels, a, b, dtype) for a, b in sizes]
        pixels = [a * b for a, b in sizes]
        k = math.log(max(peaks[1], 1) / max(peaks[0], 1)) / math.log(pixels[1] / pixels[0])
        k = min(2.0, max(1.0, k))
        peak = peaks[1] * (h * w / pixels[1]) ** k
    steps = 3 if setting.backward else 1
    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    x_bytes = setting.in_channels * h * w * torch.finfo(dtype).bits // 8
    total = weights * (2 if setting.backward else 1) + setting.batch * (x_bytes + steps * peak)
    macs = int(module.flops(h, w)) * setting.batch * steps  # type: ignore[operator]
    seconds = macs / (rate_gmacs * 1e9) * (setting.warmup + setting.rounds)
    return StepEstimate(name, total, seconds)


def available_bytes(device: str) -> Optional[float]:
    """Memory a step may use: free GPU memory, or MemAvailable of /proc/meminfo; ``None`` if unknown."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return float(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else None
    return float(pages * os.sysconf("SC_PAGE_SIZE")) if pages else None


def estimate_all(names: Sequence[str], setting: BenchSetting, rate_gmacs: float) -> Dict[str, StepEstimate]:
    """:func:`estimate_step` of every module that can be built (the others are left to the run to report)."""
    out: Dict[str, StepEstimate] = {}
    for name in names:
        try:
            out[name] = estimate_step(name, setting, rate_gmacs)
        except Exception:  # noqa: S112 - the timed run reports a module that cannot run, with its reason
            continue
    return out


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def duration(seconds: float) -> str:
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
