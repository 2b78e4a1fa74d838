"""Measured CPU cost of a few converted mmseg zoo architectures (random weights) at their protocol's size.

    OMP_NUM_THREADS=2 nice -n 10 python scripts/zoo_latency.py --out docs/results/zoo_cpu_latency.json

Each entry runs in its own process: the converted architecture built from the entry's config
(:func:`segattn.convert.mmseg.architecture_from_config`, random weights), eval, ``torch.no_grad``,
``torch.set_num_threads(--threads)``, one whole image of the protocol's size (1024x2048 for
Cityscapes), one warm-up forward, then ``--reps`` timed forwards (median reported). Peak memory is
the growth of the kernel's peak-RSS mark (VmHWM, reset just before the first timed forward) over the
resident size before it: the forward's own memory, not the weights'. Linux only (``/proc``).
The file is written atomically, an entry at a time, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

DEFAULT = [
    "fcn_r50-d8_4xb2-80k_cityscapes-512x1024",
    "pspnet_r50-d8_4xb2-80k_cityscapes-512x1024",
    "deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024",
    "nonlocal_r50-d8_4xb2-80k_cityscapes-512x1024",
    "danet_r50-d8_4xb2-80k_cityscapes-512x1024",
    "emanet_r50-d8_4xb2-80k_cityscapes-512x1024",
    "ocrnet_hr18_4xb2-80k_cityscapes-512x1024",
]
PROTOCOL = {"Cityscapes": (1024, 2048), "ADE20K": (512, 512)}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def measure_one(name: str, threads: int, reps: int) -> Dict[str, Any]:
    """Time and peak-memory of ``name``'s converted architecture (in this process)."""
    import torch

    from segattn.convert.mmseg import architecture_from_config
    from segattn.convert.zoo import zoo_entry

    torch.set_num_threads(threads)
    entry = zoo_entry(name)
    h, w = PROTOCOL[entry.dataset]
    model = architecture_from_config(entry.config).build().eval()
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():
        model(x)  # warm-up
        times: List[float] = []
        peak_mb = 0.0
        for i in range(reps):
            if i == 0:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                base = _status_kib("VmRSS")
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
            if i == 0:
                peak_mb = (_status_kib("VmHWM") - base) / 1024
    return {"name": name, "size": [h, w], "threads": threads, "reps": reps,
            "seconds": [round(t, 3) for t in times], "median_s": round(statistics.median(times), 3),
            "peak_mb": round(peak_mb, 1)}


def table(path: str) -> List[str]:
    """Markdown rows: measured time and memory beside the computed cost and the published mIoU."""
    from segattn.convert.zoo import zoo_entry
    from segattn.convert.zoo_cost import zoo_points

    with open(path, encoding="utf-8") as f:
        results = json.load(f)["results"]
    cost = {p.name: p for p in zoo_points()}
    lines = ["| entry (Cityscapes, 1024x2048) | mIoU | GMACs (computed) | params M (computed) | "
             "s / forward (measured: median, runs) | peak MiB (measured) |", "|---|---:|---:|---:|---|---:|"]
    for r in results:
        c = cost[r["name"]]
        if "error" in r:
            lines.append(f"| `{r['name']}` | {zoo_entry(r['name']).miou:.2f} | {c.macs / 1e9:.0f} | {c.params / 1e6:.1f} | "
                         f"failed: {r['error']} | - |")
            continue
        runs = ", ".join(f"{t:.0f}" for t in r["seconds"])
        lines.append(f"| `{r['name']}` | {c.miou:.2f} | {c.macs / 1e9:.0f} | {c.params / 1e6:.1f} | "
                     f"{r['median_s']:.0f} ({runs}) | {r['peak_mb']:.0f} |")
    return lines


def _write(path: str, data: Dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", default=DEFAULT, help="zoo entry names (default: a representative subset)")
    p.add_argument("--out", required=True, help="JSON file to write (atomically, after each entry)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--table", action="store_true", help="print --out's results as the Markdown table of docs/mmseg-zoo.md")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child side
    args = p.parse_args(argv)
    if args.table:
        for line in table(args.out):
            print(line)
        return 0
    if args.one:
        print(json.dumps(measure_one(args.names[0], args.threads, args.reps)))
        return 0
    import torch

    data: Dict[str, Any] = {
        "command": "OMP_NUM_THREADS=2 nice -n 10 python scripts/zoo_latency.py --out " + args.out,
        "what": "converted architecture, random weights, eval, no_grad, batch 1 at the protocol's size; "
                "one warm-up then `reps` timed forwards (median); peak_mb = VmHWM growth during the first timed one",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "results": [],
    }
    for name in args.names:
        proc = subprocess.run([sys.executable, __file__, name, "--out", args.out, "--threads", str(args.threads),
                               "--reps", str(args.reps), "--one"], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            data["results"].append({"name": name, "error": tail})
        else:
            data["results"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(data["results"][-1]), flush=True)
        _write(args.out, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
