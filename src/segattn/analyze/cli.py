"""``segattn analyze RUN... [--out DIR]``: measure the survey's explanations on trained runs."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="measure why context modules work: denoising, smoothing, low rank, bases, "
                                       "query independence, EM iterations",
                       description="Run the measurements of segattn.analyze on trained runs (compare run folders "
                                   "with final.pt, a compare output folder for all its runs, or `segattn train` "
                                   "checkpoints) on their own validation split, and write analysis.md/json/csv/png "
                                   "with spread over seeds and judged claims. Several processes on the same runs share them "
                                   "(one per core).")
    p.add_argument("runs", nargs="+", help="compare run folders (runs/<entry>/seed<k>), compare output folders, "
                                           "or checkpoint files")
    p.add_argument("--out", type=Path, default=Path("outputs/analyze"), help="report folder (default outputs/analyze)")
    p.add_argument("--max-images", type=int, default=None, help="use only the first N validation images")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--force", action="store_true", help="redo analyses already stored beside the runs")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the report already in --out (refused otherwise: nothing is overwritten unasked)")
    p.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    from segattn.errors import SegattnError

    if args.max_images is not None and args.max_images < 1:
        raise SegattnError(f"--max-images must be >= 1, got {args.max_images}")
    if args.threads is not None and args.threads < 1:
        raise SegattnError(f"--threads must be >= 1, got {args.threads}")


REPORT_FILES = ("analysis.md", "analysis.json", "analysis.csv")


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` folder that already holds a report unless ``overwrite``."""
    from segattn.errors import SegattnError

    found = [name for name in REPORT_FILES if (out / name).exists()]
    if found and not overwrite:
        raise SegattnError(f"--out {out} already holds a report ({found[0]}); pass --overwrite to replace it, "
                           "or choose another --out folder")


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this call (shown at the top of the report)."""
    parts = ["segattn", "analyze", *map(str, args.runs), "--out", str(args.out)]
    if args.max_images is not None:
        parts += ["--max-images", str(args.max_images)]
    if args.threads != 1:
        parts += ["--threads", str(args.threads)]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    from segattn.analyze.run import analyze_runs, expand_runs
    from segattn.io import check_writable_dir

    check_args(args)
    check_out(args.out, args.overwrite)
    expand_runs(args.runs)  # every path checked before anything is measured
    check_writable_dir(args.out, "--out folder")
    command = command_line(args)
    rep = analyze_runs(args.runs, args.out, command, args.max_images, args.threads, args.force)
    print(open(rep["paths"]["markdown"]).read())
    return 0
