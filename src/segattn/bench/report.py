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


def markdown_table(results: Dict[str, BenchResult], setting: BenchSetting, baseline: Optional[str] = None) -> str:
    """Rows sorted by MACs; ratios are relative to ``baseline`` measured in the same run."""
    base = results.get(baseline) if baseline else None
    lines = [
        f"Setting: {setting.batch}x{setting.in_channels}x{setting.height}x{setting.width}, {setting.dtype}, "
        f"{'forward+backward' if setting.backward else 'forward'}, {setting.device}, median of {setting.rounds} "
        "interleaved rounds" + (f"; ratios vs `{baseline}` from the same run" if base else ""),
        "",
        "| module | params (M) | GMACs | latency (ms) | peak mem (MiB) |" + (" time ratio | mem ratio |" if base else ""),
        "|---|---:|---:|---:|---:|" + ("---:|---:|" if base else ""),
    ]
    for r in sorted(results.values(), key=lambda r: (r.error != "", r.macs)):
        if r.error:
            lines.append(f"| {r.name} | - | - | failed: {r.error} | - |" + (" - | - |" if base else ""))
            continue
        row = f"| {r.name} | {r.params / 1e6:.2f} | {r.macs / 1e9:.2f} | {_fmt(r.latency_ms)} | {_fmt(r.peak_mem_mb)} |"
        if base:
            row += f" {_fmt(r.latency_ms / base.latency_ms, 2)} | {_fmt(r.peak_mem_mb / base.peak_mem_mb, 2) if base.peak_mem_mb > 0 else '-'} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def write_report(
    results: Dict[str, BenchResult], setting: BenchSetting, out_dir: Path, baseline: Optional[str] = None
) -> Dict[str, Path]:
    """Write ``bench.md``, ``bench.json``, ``bench.csv`` and (with matplotlib) ``bench.png``."""
    out_dir = Path(out_dir)
    paths = {
        "md": atomic_write_text(out_dir / "bench.md", markdown_table(results, setting, baseline)),
        "json": atomic_write_json(
            out_dir / "bench.json", {"setting": asdict(setting), "results": [asdict(r) for r in results.values()]}
        ),
    }
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["name", "params", "macs", "latency_ms", "peak_mem_mb", "error"])
    for r in results.values():
        writer.writerow([r.name, r.params, r.macs, r.latency_ms, r.peak_mem_mb, r.error])
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
