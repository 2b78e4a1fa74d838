"""Benchmark reports: a markdown table, JSON and CSV (all written atomically) and a plot."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Optional

from segattn.bench.measure import BenchResult, BenchSetting
from segattn.io import atomic_write_json, atomic_write_text


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def achieved_gmacs(r: BenchResult, setting: BenchSetting) -> float:
    """GMAC/s the module achieves: executed MACs (x3 for forward+backward: the backward runs about two
    forwards' worth of products) over the median latency; NaN when not measured."""
    if not r.executed_macs or not r.latency_ms == r.latency_ms or r.latency_ms <= 0:
        return float("nan")
    return r.executed_macs * (3 if setting.backward else 1) / (r.latency_ms * 1e6)


def markdown_table(results: Dict[str, BenchResult], setting: BenchSetting, baseline: Optional[str] = None,
                   matmul_gmacs: Optional[float] = None) -> str:
    """Rows sorted by MACs; ratios are relative to ``baseline`` measured in the same run. With
    ``matmul_gmacs`` (the machine's measured matmul rate), each module's achieved GMAC/s and its share
    of that rate are shown next to the executed MACs."""
    base = results.get(baseline) if baseline else None
    rate = matmul_gmacs is not None and any(r.executed_macs for r in results.values())
    timed = any(r.latency_all_ms for r in results.values())
    how = f"median of {setting.rounds} interleaved rounds" if timed else "not timed (one step per module for memory)"
    lines = [
        f"Setting: {setting.batch}x{setting.in_channels}x{setting.height}x{setting.width}, {setting.dtype}, "
        f"{'forward+backward' if setting.backward else 'forward'}, {setting.device}, {how}"
        + (f"; ratios vs `{baseline}` from the same run" if base else ""),
        "",
    ]
    if rate:
        lines += [f"Matmul rate of this machine (1024^3 products, same threads and dtype): "
                        f"{matmul_gmacs:.1f} GMAC/s. GMACs = the algorithm's count (`flops()`); executed = what the "
                        "kernels run (FlopCounterMode on the fast path); achieved = executed (x3 with backward) / "
                        "latency.", ""]
    extra = " executed GMACs | achieved GMAC/s | % of matmul |" if rate else ""
    lines += [
        "| module | params (M) | GMACs | latency (ms) | peak mem (MiB) |" + extra
        + (" time ratio | mem ratio |" if base else ""),
        "|---|---:|---:|---:|---:|" + ("---:|---:|---:|" if rate else "") + ("---:|---:|" if base else ""),
    ]
    for r in sorted(results.values(), key=lambda r: (r.error != "", r.macs)):
        if r.error:
            lines.append(f"| {r.name} | - | - | failed: {r.error} | - |" + (" - | - | - |" if rate else "")
                         + (" - | - |" if base else ""))
            continue
        row = f"| {r.name} | {r.params / 1e6:.2f} | {r.macs / 1e9:.2f} | {_fmt(r.latency_ms)} | {_fmt(r.peak_mem_mb)} |"
        if rate:
            achieved = achieved_gmacs(r, setting)
            row += (f" {_fmt(r.executed_macs / 1e9, 2) if r.executed_macs else '-'} | {_fmt(achieved)} |"
                    f" {_fmt(100 * achieved / matmul_gmacs, 0)} |")
        if base:
            row += f" {_fmt(r.latency_ms / base.latency_ms, 2)} | {_fmt(r.peak_mem_mb / base.peak_mem_mb, 2) if base.peak_mem_mb > 0 else '-'} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def write_report(
    results: Dict[str, BenchResult], setting: BenchSetting, out_dir: Path, baseline: Optional[str] = None,
    matmul_gmacs: Optional[float] = None,
) -> Dict[str, Path]:
    """Write ``bench.md``, ``bench.json``, ``bench.csv`` and (with matplotlib) ``bench.png``."""
    out_dir = Path(out_dir)
    paths = {
        "md": atomic_write_text(out_dir / "bench.md", markdown_table(results, setting, baseline, matmul_gmacs)),
        "json": atomic_write_json(
            out_dir / "bench.json", {"setting": asdict(setting), "matmul_gmacs": matmul_gmacs,
                                     "results": [asdict(r) for r in results.values()]}
        ),
    }
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["name", "params", "macs", "executed_macs", "latency_ms", "peak_mem_mb", "error"])
    for r in results.values():
        writer.writerow([r.name, r.params, r.macs, r.executed_macs, r.latency_ms, r.peak_mem_mb, r.error])
    paths["csv"] = atomic_write_text(out_dir / "bench.csv", buf.getvalue())
    png = plot(results, setting, out_dir / "bench.png")
    if png is not None:
        paths["png"] = png
    return paths


def plot(results: Dict[str, BenchResult], setting: BenchSetting, path: Path) -> Optional[Path]:
    """Latency against MACs, one labelled point per module (log-log). ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ok = [r for r in results.values() if not r.error and r.macs > 0 and r.latency_ms == r.latency_ms]
    fig, ax = plt.subplots(figsize=(8, 6))
    for r in ok:
        ax.scatter(r.macs / 1e9, r.latency_ms)
        ax.annotate(r.name, (r.macs / 1e9, r.latency_ms), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GMACs (analytic)")
    ax.set_ylabel("latency (ms, median)")
    ax.set_title(
        f"context modules at {setting.batch}x{setting.in_channels}x{setting.height}x{setting.width}, "
        f"{'fwd+bwd' if setting.backward else 'fwd'}, {setting.device}"
    )
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    from segattn.io import atomic_write_bytes

    return atomic_write_bytes(path, buf.getvalue())
