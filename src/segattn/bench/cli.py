"""``segattn bench``: cost, latency and memory of context modules, side by side."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from segattn.api import list_modules
from segattn.bench.estimate import duration
from segattn.bench.measure import (
    BenchResult,
    BenchSetting,
    add_throughput,
    describe_modules,
    matmul_rate,
    peak_memory_mb,
    time_modules,
)
from segattn.bench.report import markdown_table, write_report

MAX_SECONDS = 3600  # a timed run estimated above this is refused unless --force


def parse_size(text: str) -> tuple:
    """'64' -> (64, 64); '65x97' -> (65, 97); sides must be >= 1."""
    m = re.fullmatch(r"(\d+)(?:x(\d+))?", text.strip())
    if not m or int(m.group(1)) < 1 or int(m.group(2) or 1) < 1:
        raise argparse.ArgumentTypeError(f"size must look like 64 or 65x97 with sides >= 1, got {text!r}")
    h = int(m.group(1))
    return h, int(m.group(2) or h)


def positive_int(text: str) -> int:
    """An int >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _with_baseline(names: List[str], baseline: Optional[str]) -> Tuple[List[str], Optional[str]]:
    """The modules to bench and the baseline: an explicit ``--baseline`` must be registered and is
    benched too; without one, ``nonlocal`` when it is benched."""
    from segattn.errors import SegattnError

    if baseline is None:
        return names, ("nonlocal" if "nonlocal" in names else None)
    if baseline not in list_modules():
        raise SegattnError(f"--baseline {baseline!r} is not a registered module; see `segattn modules`")
    return (names if baseline in names else sorted(names + [baseline])), baseline


def _fitting(names: List[str], setting: BenchSetting, memory_only: bool) -> Tuple[List[str], Dict[str, BenchResult], float]:
    """Modules whose estimated step fits the free memory, the others as results that say why they were
    not run, and the estimated time of the run; every module too big is a :class:`SegattnError`."""
    from segattn.bench.estimate import available_bytes, estimate_all, gib
    from segattn.errors import SegattnError

    rate = matmul_rate(setting, size=512, repeats=3)
    estimates = estimate_all(names, setting, rate)
    free = available_bytes(setting.device)
    big = {n: e.bytes for n, e in estimates.items() if free is not None and e.bytes > free}
    where = (f"{setting.batch}x{setting.in_channels}x{setting.height}x{setting.width}"
             f"{' forward+backward' if setting.backward else ''}")
    if big and len(big) == len(names):
        worst = min(big, key=big.get)
        raise SegattnError(f"bench at {where}: no module fits in the {gib(free)} of free memory; the smallest "
                           f"step, {worst}, needs about {gib(big[worst])} (estimated); pick a smaller --size, "
                           "--channels or --batch")
    skipped = {n: BenchResult(n, 0, 0, error=f"not run: needs about {gib(b)} at {where} (estimated), "
                              f"{gib(free)} free") for n, b in big.items()}
    for n, b in big.items():
        print(f"segattn bench: warning: {n} skipped: needs about {gib(b)} (estimated), {gib(free)} free",
              file=sys.stderr)
    seconds = 0.0 if memory_only else sum(e.seconds for n, e in estimates.items() if n not in big)
    return [n for n in names if n not in big], skipped, seconds


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark context modules (MACs, params, latency, peak memory)")
    p.add_argument("patterns", nargs="*", default=["*"], help="module name patterns (default: all)")
    p.add_argument("--channels", type=positive_int, default=512, help="input channels (default 512, the heads' width)")
    p.add_argument("--size", type=parse_size, default=(64, 64), help="feature-map size HxW (default 64x64)")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--backward", action="store_true", help="time forward+backward in train mode")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--rounds", type=positive_int, default=5, help="interleaved timing rounds (median reported)")
    p.add_argument("--memory", action="store_true", help="also measure peak memory (one subprocess per module on CPU)")
    p.add_argument("--memory-only", action="store_true",
                   help="peak memory, params and MACs without timing (one step per module: for sizes where a "
                        "timed run would take hours)")
    p.add_argument("--baseline", default=None,
                   help="module the ratios are relative to (benched too if no pattern names it; "
                        "default: nonlocal when it is benched, else no ratio columns)")
    p.add_argument("--out", type=Path, default=None, help="folder for bench.md/json/csv/png")
    p.add_argument("--force", action="store_true",
                   help=f"run even when the timing is estimated above {MAX_SECONDS // 3600} h (refused otherwise)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segattn.engine.distributed import pick_device
    from segattn.engine.short import shorten_bench
    from segattn.errors import SegattnError
    from segattn.io import check_writable_dir

    names = sorted({n for pat in args.patterns for n in list_modules(pat)})
    if not names:
        raise SegattnError(f"no registered module matches {args.patterns}; see `segattn modules`")
    names, baseline = _with_baseline(names, args.baseline)
    pick_device(args.device)  # an unavailable device fails here, not once per module
    if args.out:
        check_writable_dir(args.out, "bench --out")  # before the timing, not after it
    channels, size, rounds = shorten_bench(args.channels, args.size, args.rounds)  # SEGATTN_DOCS_SHORT=1
    setting = BenchSetting(
        in_channels=channels, height=size[0], width=size[1], batch=args.batch,
        backward=args.backward, device=args.device, dtype=args.dtype, rounds=rounds,
    )
    runnable, skipped, seconds = _fitting(names, setting, args.memory_only)
    if seconds > MAX_SECONDS and not args.force:
        raise SegattnError(f"bench at {setting.batch}x{setting.in_channels}x{setting.height}x{setting.width}: the timed "
                           f"run is estimated at {duration(seconds)}, above the {duration(MAX_SECONDS)} limit; pass "
                           "--force to run it anyway, or --memory-only (one step per module), a smaller --size, "
                           "--channels or --rounds")
    if args.memory_only:
        results = describe_modules(runnable, setting)
    else:
        print(f"timing {len(runnable)} modules in {setting.rounds} interleaved rounds "
              f"(estimated {duration(seconds)}) ...", flush=True)
        results = time_modules(runnable, setting, show_progress=True)
    if args.memory or args.memory_only:
        for i, name in enumerate(names, 1):
            if not results[name].error:
                print(f"[{i}/{len(names)}] peak memory of {name}", flush=True)
                try:
                    results[name].peak_mem_mb = peak_memory_mb(name, setting)
                except RuntimeError as exc:  # one module's failure is reported in its row; the others still run
                    results[name].error = str(exc)[:200]
    results.update(skipped)
    if baseline is not None and results[baseline].error:
        print(f"segattn bench: warning: the baseline {baseline} did not run ({results[baseline].error}); "
              "no ratio columns", file=sys.stderr)
    baseline = baseline if baseline is not None and not results[baseline].error else None
    # executed MACs and the machine's matmul rate, for GMAC/s (nothing to relate them to without timing)
    rate = None if args.memory_only else add_throughput(results, setting)
    print(markdown_table(results, setting, baseline, rate))
    if args.out:
        for kind, path in write_report(results, setting, args.out, baseline, rate).items():
            print(f"wrote {kind}: {path}")
    return 0
