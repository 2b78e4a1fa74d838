"""segattn against mmsegmentation 1.2.2, side by side: modules and decode heads on the same features.

mmsegmentation is never a segattn dependency: install it in its own virtual environment together with
segattn (``--no-deps``) and run this script with that environment's python (README "Peer comparison")::

    bash scripts/make_mmseg_venv.sh                  # mmseg-venv/ in the checkout (git-ignored)
    mmseg-venv/bin/python benchmarks/peers.py --sizes 64 97 128 --modes eval train

Method: every (case, size, mode, implementation) runs in a fresh process; the two implementations are
interleaved (their order alternates between rounds) so a busy machine's drift hits both alike. In each
process: one warm-up step at the full size, then ``--reps`` timed steps (median); the first of them
is also the memory-measured one (growth of the kernel's peak-RSS mark, reset just before the step;
glibc's mmap threshold is fixed at 64 KiB so freed tensors go back to the OS and the mark sees the
step, not the allocator's history). ``eval`` is a forward in eval mode under ``no_grad``; ``train`` is forward +
backward in train mode (to the input and every parameter) of the mean of every output. Ratios are
ours / mmseg from the same run.

The cases live in one file per kind beside this one: ``peers_modules.py`` (single modules),
``peers_heads.py`` (decode heads), ``peers_models.py`` (whole models), ``peers_converted.py`` (zoo
models through ``segattn convert mmseg``), ``peers_common.py`` (what they share).

mmcv-lite ships no compiled extension: a placeholder ``mmcv._ext`` whose functions raise when called
lets ``mmcv.ops`` import (its CrissCrossAttention is pure PyTorch); cases that need a compiled op
(PSAMask: PSANet) report that instead of a number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the per-case files beside this one
import peers_converted  # noqa: E402
import peers_heads  # noqa: E402
import peers_models  # noqa: E402
import peers_modules  # noqa: E402
from peers_common import CHANNELS, NUM_CLASSES, Case, _hw, install_ext_placeholder  # noqa: E402, F401

FAMILIES = {"module": peers_modules, "head": peers_heads, "model": peers_models, "converted": peers_converted}
CASES: Dict[str, Case] = {c.name: c for family in FAMILIES.values() for c in family.CASES}


def build_ours(case: str, size: str) -> Any:
    """segattn's side of ``case`` (a module, a head fed one level, a whole or converted model)."""
    return FAMILIES[CASES[case].kind].build_ours(case, size)


def build_mmseg(case: str, size: str) -> Any:
    """mmseg's side of ``case``; mmcv-lite's missing compiled ops raise only when called."""
    install_ext_placeholder()
    return FAMILIES[CASES[case].kind].build_mmseg(case, size)


# ------------------------------------------------------------------------------------------ worker
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _outputs(out: Any) -> List[Any]:
    if isinstance(out, dict):
        return list(out.values())
    return list(out) if isinstance(out, (list, tuple)) else [out]


def worker(impl: str, case: str, size: str, mode: str, reps: int, threads: int, batch: int = 1,
           measure: str = "time") -> Dict[str, Any]:
    """One process, one implementation: a warm-up step, then ``reps`` timed steps (the first memory-measured);
    with ``measure="tensors"`` one untimed step under ``PeakLiveRecorder`` (exact peak of live tensor bytes)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    module = build_ours(case, size) if impl == "ours" else build_mmseg(case, size)
    train = mode == "train"
    module.train(train)
    whole = CASES[case].kind in ("model", "converted")
    if CASES[case].kind == "converted" and mode != "eval":
        raise ValueError("converted models are measured in eval mode only")
    h, w = _hw(size)
    x = torch.randn(batch, 3, h, w) if whole else torch.randn(batch, CHANNELS, h, w)
    labels = torch.randint(0, NUM_CLASSES, (batch, h, w))

    def loss(outs: List[Any]) -> Any:
        if not whole:  # modules and heads: the mean of every output
            return sum(o.float().mean() for o in outs)
        return sum(F.cross_entropy(F.interpolate(o, size=(h, w), mode="bilinear", align_corners=False), labels)
                   for o in outs)

    def step() -> None:
        if train:
            xi = x if whole else x.clone().requires_grad_(True)
            loss(_outputs(module(xi))).backward()
            module.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                module(x)

    step()  # warm-up at the full size
    if measure == "tensors":
        from segattn.bench.tensors import PeakLiveRecorder

        with PeakLiveRecorder() as rec:
            step()
        return {"live_mb": rec.peak / 2**20}
    times, peak_mb = [], 0.0
    for i in range(reps):
        if i == 0:  # the first timed step is also the memory-measured one
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            base = _status_kib("VmRSS")
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
        if i == 0:
            peak_mb = (_status_kib("VmHWM") - base) / 1024
    return {"ms": statistics.median(times), "peak_mb": peak_mb}


def short_error(message: str) -> str:
    """The table's wording for the known failures of a worker; other messages cut to 160 characters."""
    if "compiled op" in message:
        return "needs a compiled op (PSAMask)"
    if "Expected more than 1 value per channel" in message:
        return "cannot train at batch 1 (BatchNorm on a 1x1 pooled branch)"
    return message[:160]


def run_worker(python: str, impl: str, case: str, size: str, mode: str, reps: int, threads: int,
               timeout: float, batch: int = 1, measure: str = "time") -> Dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MALLOC_MMAP_THRESHOLD_": "65536",
           "PYTHONWARNINGS": "ignore"}
    cmd = [python, os.path.abspath(__file__), "--worker", impl, case, str(size), mode, str(reps), str(threads),
           str(batch), measure]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"error": short_error(lines[-1] if lines else f"exit {proc.returncode}")}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ driver
def _cell(values: List[float], digits: int = 0) -> str:
    return f"{statistics.median(values):.{digits}f}" if values else "-"


def table(results: Dict[Tuple[str, str, str, str], Dict[str, Any]], cases: List[str], sizes: List[str],
          modes: List[str]) -> str:
    lines = ["| case | size | mode | ours ms | mmseg ms | time ours/mmseg | ours MiB | mmseg MiB | memory ours/mmseg |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for case in cases:
        for size in sizes:
            for mode in modes:
                o, m = results.get((case, size, mode, "ours"), {}), results.get((case, size, mode, "mmseg"), {})
                row = [case, "x".join(map(str, _hw(size))), mode]
                ot, mt = o.get("ms", []), m.get("ms", [])
                om, mm = o.get("peak_mb", []), m.get("peak_mb", [])
                row += [_cell(ot) if ot else o.get("error", "-"), _cell(mt) if mt else m.get("error", "-")]
                row.append(f"{statistics.median(ot) / statistics.median(mt):.2f}x" if ot and mt else "-")
                row += [_cell(om), _cell(mm)]
                row.append(f"{statistics.median(om) / statistics.median(mm):.2f}x" if om and mm and
                           statistics.median(mm) > 0 else "-")
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def tensor_table(results: Dict[Tuple[str, str, str, str], Dict[str, Any]], cases: List[str], sizes: List[str],
                 modes: List[str]) -> str:
    """``--tensors``: peak live tensor MiB of one step, ours against mmseg."""
    lines = ["| case | size | mode | ours tensor MiB | mmseg tensor MiB | ours/mmseg |", "|---|---|---|---:|---:|---:|"]
    for case in cases:
        for size in sizes:
            for mode in modes:
                o, m = results.get((case, size, mode, "ours"), {}), results.get((case, size, mode, "mmseg"), {})
                ol, ml = o.get("live_mb", []), m.get("live_mb", [])
                row = [case, "x".join(map(str, _hw(size))), mode, _cell(ol, 1) if ol else o.get("error", "-"),
                       _cell(ml, 1) if ml else m.get("error", "-")]
                row.append(f"{statistics.median(ol) / statistics.median(ml):.2f}x" if ol and ml else "-")
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="*", default=[c for c in CASES if CASES[c].kind not in ("model", "converted")],
                   help=f"subset of {', '.join(CASES)} (default: every module and head; whole and converted "
                        "models on request)")
    p.add_argument("--sizes", nargs="*", default=["64", "97", "128"],
                   help="N (N x N) or HxW, e.g. 512x1024 for the converted models")
    p.add_argument("--modes", nargs="*", default=["eval", "train"], choices=["eval", "train"])
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (fresh processes each)")
    p.add_argument("--reps", type=int, default=2, help="timed steps per process (median)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=1, help="batch size (whole models: 2 in the issue's protocol)")
    p.add_argument("--python", default=sys.executable, help="interpreter with segattn and mmseg (default: this one)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per process")
    p.add_argument("--out", default=None, help="write the raw results as JSON here, after every process "
                                               "(must not exist unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run recorded in --out: its finished "
                                                         "processes are kept, the rest run")
    p.add_argument("--tensors", action="store_true",
                   help="instead of time and resident memory: the exact peak of live tensor bytes of one step "
                        "(segattn.bench.tensors.PeakLiveRecorder; independent of load and allocator)")
    p.add_argument("--worker", nargs=8, metavar=("IMPL", "CASE", "SIZE", "MODE", "REPS", "THREADS", "BATCH", "MEASURE"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        impl, case, size, mode, reps, threads, batch, measure = args.worker
        print(json.dumps(worker(impl, case, size, mode, int(reps), int(threads), int(batch), measure)))
        return 0
    try:
        args.sizes = ["x".join(map(str, _hw(sz))) if "x" in sz else str(int(sz)) for sz in args.sizes]
    except ValueError:
        p.error(f"--sizes takes N or HxW (positive integers), got {args.sizes}")
    bad = [c for c in args.cases if c not in CASES]
    if bad:
        p.error(f"unknown case(s) {bad}; expected some of {list(CASES)}")
    if args.resume and not args.out:
        p.error("--resume needs --out (the run to continue)")
    if args.out and os.path.exists(args.out) and not args.resume:
        p.error(f"--out {args.out} exists; pick a new path, or add --resume to continue it")
    settings = {"threads": args.threads, "reps": args.reps, "batch": args.batch, "tensors": args.tensors}
    records: List[Dict[str, Any]] = []
    if args.resume and os.path.exists(args.out):
        try:
            with open(args.out) as f:
                saved = json.load(f)
            records = list(saved["records"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            p.error(f"--out {args.out} is not a run of this script ({type(exc).__name__}: {exc})")
        if saved.get("settings") != settings:
            p.error(f"--out {args.out} was run with {saved.get('settings')}, not {settings}; resume with those")
    probe = subprocess.run([args.python, "-c", "import mmseg, segattn; print(mmseg.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        p.error(f"{args.python} cannot import both mmseg and segattn; see the recipe in this file's docstring")
    cmd = "python benchmarks/peers.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    print(f"mmseg {probe.stdout.strip()}, {args.threads} thread(s), {args.rounds} interleaved round(s) of fresh "
          f"processes, median of {args.reps} timed steps each; batch {args.batch}, {CHANNELS} channels "
          "(whole models: 3-channel images)", flush=True)
    done = {(r["round"], r["case"], str(r["size"]), r["mode"], r["impl"]) for r in records}
    jobs = [(r, case, size, mode, impl) for r in range(args.rounds) for case in args.cases for size in args.sizes
            for mode in args.modes for impl in (("ours", "mmseg") if r % 2 == 0 else ("mmseg", "ours"))]
    todo = [job for job in jobs if job not in done]
    if len(todo) < len(jobs):
        print(f"resuming {args.out}: {len(jobs) - len(todo)} of {len(jobs)} processes already measured", flush=True)
    for i, (r, case, size, mode, impl) in enumerate(todo, 1):
        res = run_worker(args.python, impl, case, size, mode, args.reps, args.threads, args.timeout, args.batch,
                         "tensors" if args.tensors else "time")
        records.append({"round": r, "case": case, "size": size, "mode": mode, "impl": impl, **res})
        print(f"[{i}/{len(todo)}] round {r + 1} {case} {size} {mode} {impl}: {res}", flush=True)
        if args.out:
            from segattn.io import atomic_write_json

            atomic_write_json(args.out, {"command": cmd, "settings": settings, "records": records})
    results: Dict[Tuple[str, str, str, str], Dict[str, Any]] = {}
    for rec in records:
        slot = results.setdefault((rec["case"], str(rec["size"]), rec["mode"], rec["impl"]),
                                  {"ms": [], "peak_mb": [], "live_mb": []})
        if "error" in rec:
            slot["error"] = rec["error"]
        for key in ("ms", "peak_mb", "live_mb"):
            if key in rec:
                slot[key].append(rec[key])
    print()
    print(f"`{cmd}`")
    print()
    print((tensor_table if args.tensors else table)(results, args.cases, args.sizes, args.modes))
    print()
    for case in args.cases:
        print(f"- {case}: {CASES[case].note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
