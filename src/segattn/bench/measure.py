"""Cost and latency of context modules, measured side by side in one run.

* MACs: the module's analytic ``flops(H, W)`` (checked against FlopCounterMode by the tests);
* parameters;
* latency: all modules are timed in interleaved rounds (round r times every module once), so slow
  drifts of a shared machine hit every module alike; the median over rounds is reported;
* peak memory: on CUDA ``torch.cuda.max_memory_allocated`` around one step; on CPU the growth of the
  resident set during one step (peak mark reset before it), measured in a fresh subprocess per
  module (the allocator returns large blocks to the OS, so the high-water mark is the step's footprint).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

import segattn.modules  # noqa: F401  (registers every context module)
from segattn.registry import MODULES


@dataclass
class BenchSetting:
    """One benchmark configuration shared by every module of a run."""

    in_channels: int = 512
    height: int = 64
    width: int = 64
    batch: int = 1
    backward: bool = False
    device: str = "cpu"
    dtype: str = "float32"
    warmup: int = 1
    rounds: int = 5
    threads: Optional[int] = None


@dataclass
class BenchResult:
    name: str
    params: int
    macs: int
    latency_ms: float = float("nan")
    latency_all_ms: List[float] = field(default_factory=list)
    peak_mem_mb: float = float("nan")
    error: str = ""
    executed_macs: int = 0  # what the kernels run (FlopCounterMode on the fused paths), forward, batch included


def _dtype(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(table)}")
    return table[name]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(name: str, setting: BenchSetting) -> Callable[[], None]:
    """Build module ``name`` and its input; return a closure running one forward (and backward)."""
    device = torch.device(setting.device)
    module = MODULES.create(name, setting.in_channels).to(device=device, dtype=_dtype(setting.dtype))
    module.train(setting.backward)
    x = torch.randn(
        setting.batch, setting.in_channels, setting.height, setting.width, device=device, dtype=_dtype(setting.dtype)
    )

    def step() -> None:
        if setting.backward:
            x.requires_grad_(True)
            y = module(x)
            y.float().mean().backward()
            module.zero_grad(set_to_none=True)
            x.grad = None
        else:
            with torch.no_grad():
                module(x)
        _sync(device)

    step.module = module  # type: ignore[attr-defined]
    return step


def _describe(name: str, module: torch.nn.Module, setting: BenchSetting) -> BenchResult:
    macs = int(module.flops(setting.height, setting.width)) * setting.batch  # type: ignore[operator]
    return BenchResult(name, sum(p.numel() for p in module.parameters()), macs)


def describe_modules(names: Sequence[str], setting: BenchSetting) -> Dict[str, BenchResult]:
    """Params and analytic MACs of every module, nothing run (``segattn bench --memory-only``)."""
    results: Dict[str, BenchResult] = {}
    for name in names:
        try:
            results[name] = _describe(name, MODULES.create(name, setting.in_channels), setting)
        except Exception as exc:  # reported in the table, as in time_modules
            results[name] = BenchResult(name, 0, 0, error=f"{type(exc).__name__}: {exc}"[:200])
    return results


def time_modules(names: Sequence[str], setting: BenchSetting, show_progress: bool = False) -> Dict[str, BenchResult]:
    """Latency of every module, timed in interleaved rounds. Failures are recorded, not raised.

    ``show_progress`` reports the warm-up and the rounds on stderr (:mod:`segattn.progress`).
    """
    from segattn.progress import progress

    if setting.threads:
        torch.set_num_threads(setting.threads)
    results: Dict[str, BenchResult] = {}
    steps: Dict[str, Callable[[], None]] = {}
    for name in progress(names, desc="bench warm-up", unit="module", enabled=show_progress):
        try:
            step = make_step(name, setting)
            results[name] = _describe(name, step.module, setting)  # type: ignore[attr-defined]
            for _ in range(setting.warmup):
                step()
            steps[name] = step
        except Exception as exc:  # a module that cannot run at this setting is reported, not fatal
            results[name] = BenchResult(name, 0, 0, error=f"{type(exc).__name__}: {exc}"[:200])
    for _ in progress(range(setting.rounds), desc="bench rounds", unit="round", enabled=show_progress):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            results[name].latency_all_ms.append((time.perf_counter() - start) * 1e3)
    for name in steps:
        results[name].latency_ms = statistics.median(results[name].latency_all_ms)
    return results


def peak_memory_mb(name: str, setting: BenchSetting) -> float:
    """Peak memory of one step of module ``name`` in MiB (see the module docstring for the method)."""
    if setting.device.startswith("cuda"):
        step = make_step(name, setting)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    cmd = [sys.executable, "-m", "segattn.bench.measure", name, json.dumps(asdict(setting))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode < 0:
        raise RuntimeError(f"memory probe for {name!r} was killed by signal {-proc.returncode} (out of memory?)")
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe for {name!r} failed: {proc.stderr.strip()[-500:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"])


def executed_macs(name: str, setting: BenchSetting) -> int:
    """MACs one forward of ``name`` executes on its fast path (FlopCounterMode, fused kernels counted with
    their real operand sizes, e.g. DANet PAM's query/key padded to the value width), batch included."""
    from segattn.ops.flops import count_macs

    device = torch.device(setting.device)
    module = MODULES.create(name, setting.in_channels).to(device=device, dtype=_dtype(setting.dtype)).eval()
    x = torch.randn(setting.batch, setting.in_channels, setting.height, setting.width, device=device,
                    dtype=_dtype(setting.dtype))
    return count_macs(module, x, reference=False)


def matmul_rate(setting: BenchSetting, size: int = 1024, repeats: int = 5) -> float:
    """This machine's square-matmul rate in GMAC/s (best of ``repeats``, ``size`` x ``size`` operands) at the
    setting's device, dtype and threads: the ceiling that matmul-bound modules are compared with."""
    if setting.threads:
        torch.set_num_threads(setting.threads)
    device = torch.device(setting.device)
    a = torch.randn(size, size, device=device, dtype=_dtype(setting.dtype))
    b = torch.randn(size, size, device=device, dtype=_dtype(setting.dtype))
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return size**3 / best / 1e9


def add_throughput(results: Dict[str, BenchResult], setting: BenchSetting) -> float:
    """Fill ``executed_macs`` of every successful result; return the matmul rate (GMAC/s) measured now."""
    for name, r in results.items():
        if not r.error:
            try:
                r.executed_macs = executed_macs(name, setting)
            except Exception:  # counting is a report extra; a module FlopCounterMode cannot run keeps 0
                r.executed_macs = 0
    return matmul_rate(setting)


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise KeyError(field_name)


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM; Linux >= 4.0). False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _first_call_warmup(module: torch.nn.Module, setting: BenchSetting) -> None:
    """One step on a 2x2 input: thread pools and kernel caches are set up outside the measurement."""
    p = next(module.parameters(), None)
    dtype = p.dtype if p is not None else torch.float32
    tiny = torch.randn(1, setting.in_channels, 2, 2, device=setting.device, dtype=dtype, requires_grad=setting.backward)
    if setting.backward:
        module(tiny).float().mean().backward()
        module.zero_grad(set_to_none=True)
    else:
        with torch.no_grad():
            module(tiny)


def _memory_probe(name: str, setting_json: str) -> None:
    """Growth of resident memory during one step: VmHWM after the step minus VmRSS before it.

    The peak mark is reset first, so transient peaks of imports and model construction do not hide
    the step's own; without /proc (macOS) the process-lifetime ``ru_maxrss`` is used instead.
    """
    setting = BenchSetting(**json.loads(setting_json))
    step = make_step(name, setting)
    _first_call_warmup(step.module, setting)  # type: ignore[attr-defined]
    if _reset_peak():
        base = _status_kib("VmRSS")
        step()
        peak_kib = _status_kib("VmHWM") - base
    else:
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        peak_kib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * scale / 1024
    print(json.dumps({"peak_mb": max(peak_kib, 0) / 1024}))


if __name__ == "__main__":  # the subprocess side of peak_memory_mb
    _memory_probe(sys.argv[1], sys.argv[2])
