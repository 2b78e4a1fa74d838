"""``segattn compare PLAN [--dataset synthetic|camvid] [--seeds N] [--out DIR] [--replicate] [-j N] [--reuse DIR]``.

``--analyze`` is composed from above: :mod:`segattn.cli` passes the analyze step and the per-run
measurement in (``add_parser(sub, analyze_step=..., analyze_run=...)``), so this package never
imports :mod:`segattn.analyze`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from segattn.compare.launch import AfterRun

AnalyzeStep = Callable[..., Any]


def add_parser(sub: argparse._SubParsersAction, analyze_step: Optional[AnalyzeStep] = None,
               analyze_run: Optional[AfterRun] = None) -> None:
    """The ``compare`` subcommand; ``analyze_step`` (the report of ``--analyze``) and ``analyze_run``
    (one finished run measured at once, a module-level function: it goes to the ``-j`` workers) are
    composed from above."""
    from segattn.compare.plan import list_plans

    p = sub.add_parser("compare", help="train a plan's entries over seeds; report mIoU with error bars, cost and claims",
                       description="Run (or resume) every (entry, seed) of an experiment plan and write the report "
                                   f"(compare.md/json/csv/png). Shipped plans: {', '.join(list_plans())}.")
    p.add_argument("plan", help="a shipped plan name or a plan file (YAML/JSON)")
    p.add_argument("--dataset", default="synthetic", help="which of the plan's protocols to run (default synthetic)")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per entry (default: the plan's, 8 for the shipped ones; 'holds' needs at least 6)")
    p.add_argument("--first-seed", type=int, default=0, metavar="S",
                   help="start the seed range at S (default 0): a pilot on seeds the published range never "
                        "uses, e.g. --first-seed 100 --seeds 1")
    p.add_argument("--replicate", action="store_true",
                   help="also train the disjoint seeds N..2N-1 and report whether each verdict replicates")
    p.add_argument("--out", type=Path, default=None,
                   help="folder of the runs and the report (default outputs/compare/<plan>-<dataset>); "
                        "finished runs in it are skipped, interrupted ones resumed; several processes on one --out "
                        "share the runs (each leaves the runs another is training to it)")
    p.add_argument("--reuse", type=Path, action="append", default=[], metavar="DIR",
                   help="another plan's --out folder: a run whose identical config (model, data, optimiser, "
                        "schedule, seed) finished there is copied, with provenance, instead of trained (repeatable)")
    p.add_argument("--report-dir", type=Path, default=None,
                   help="write the report (and copies of the runs' result.json) here instead of --out")
    p.add_argument("--report-only", action="store_true", help="only aggregate the runs already finished")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (default 1)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="train N runs at a time in local worker processes")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local (this machine, -j workers) or slurm (one job per run through submitit)")
    p.add_argument("--partition", default=None, help="SLURM partition (--launcher slurm)")
    p.add_argument("--time", type=int, default=None, metavar="MIN",
                   help="SLURM time limit per run in minutes (default 60)")
    p.add_argument("--cpus-per-run", type=int, default=None, help="SLURM CPUs per run (default --threads)")
    p.add_argument("--gpus-per-run", type=int, default=None, help="SLURM GPUs per run (default 0)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep each finished run's last.pt / best.pt (deleted by default once the run is measured)")
    p.add_argument("--analyze", action="store_true",
                   help="measure each run with `segattn analyze` as soon as it finishes (stored beside it, "
                        "analysis.json), then every finished run not measured yet, and write analysis.md/json/csv/png "
                        "beside the report (resumable; several processes on one --out share the runs)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every run, after the protocol's (repeatable)")
    p.set_defaults(func=run, analyze_step=analyze_step, analyze_run=analyze_run)


def resume_command(args: argparse.Namespace, out: Path) -> str:
    """The command that continues this call."""
    cmd = f"segattn compare {args.plan} --dataset {args.dataset} --out {out}"
    if args.seeds is not None:
        cmd += f" --seeds {args.seeds}"
    if args.first_seed:
        cmd += f" --first-seed {args.first_seed}"
    if args.replicate:
        cmd += " --replicate"
    if args.threads != 1:
        cmd += f" --threads {args.threads}"
    if args.jobs != 1:
        cmd += f" -j {args.jobs}"
    cmd += "".join(f" --reuse {d}" for d in args.reuse)
    if args.analyze:
        cmd += " --analyze"
    if args.report_dir is not None:
        cmd += f" --report-dir {args.report_dir}"
    return cmd + "".join(f" --set {s}" for s in args.set)


def run(args: argparse.Namespace) -> int:
    from segattn.compare.plan import PlanError, load_plan, validate_plan
    from segattn.compare.report import write_report
    from segattn.compare.runner import run_plan

    plan = load_plan(args.plan)
    for flag, value in (("--seeds", args.seeds), ("--threads", args.threads), ("-j", args.jobs),
                        ("--time", args.time), ("--cpus-per-run", args.cpus_per_run)):
        if value is not None and value < 1:
            raise PlanError(f"{flag} must be >= 1, got {value}")
    if args.gpus_per_run is not None and args.gpus_per_run < 0:
        raise PlanError(f"--gpus-per-run must be >= 0, got {args.gpus_per_run}")
    if args.first_seed < 0:
        raise PlanError(f"--first-seed must be >= 0, got {args.first_seed}")
    if args.analyze and args.analyze_step is None:
        raise PlanError("--analyze is not available here (segattn.analyze is not wired into this command line)")
    out = args.out or Path("outputs") / "compare" / f"{plan.name}-{args.dataset}"
    slurm_only = [flag for flag, value in (("--partition", args.partition), ("--time", args.time),
                                           ("--cpus-per-run", args.cpus_per_run), ("--gpus-per-run", args.gpus_per_run))
                  if value is not None]
    if slurm_only and args.launcher != "slurm":
        raise PlanError(f"{', '.join(slurm_only)} appl{'ies' if len(slurm_only) == 1 else 'y'} to --launcher slurm "
                        f"only (this call runs --launcher {args.launcher})")
    if args.report_dir is not None:
        from segattn.io import check_writable_dir

        check_writable_dir(args.report_dir, "--report-dir")
    if args.report_only and args.reuse:
        raise PlanError("--reuse copies runs before training; --report-only trains nothing: use one or the other")
    if args.report_only:
        plan.protocol(args.dataset)
        validate_plan(plan, args.dataset, args.set)
        if not any(out.glob("runs/*/seed*/result.json")):
            raise PlanError(f"--report-only: no finished run under {out} (expected runs/<entry>/seed<k>/result.json)")
        rep = write_report(plan, out, args.dataset, report_dir=args.report_dir, seeds=args.seeds,
                           replicate=args.replicate, first_seed=args.first_seed)
        print(open(rep["paths"]["markdown"]).read())
        if args.analyze:
            args.analyze_step(args, plan, out)
        return 0
    options = {"partition": args.partition, "time_min": args.time, "cpus": args.cpus_per_run, "gpus": args.gpus_per_run}
    summary = run_plan(plan, args.dataset, args.seeds, out, extra=args.set, threads=args.threads,
                       report_dir=args.report_dir, keep_checkpoints=args.keep_checkpoints, replicate=args.replicate,
                       workers=args.jobs, launcher=args.launcher, launcher_options=options, reuse=args.reuse,
                       first_seed=args.first_seed, after_run=args.analyze_run if args.analyze else None)
    if summary["interrupted"]:
        print(f"interrupted; {summary['done']}/{summary['total']} runs finished; resume with "
              f"`{resume_command(args, out)}`", file=sys.stderr)
        return 130
    if args.analyze:
        args.analyze_step(args, plan, out)
    return 0
