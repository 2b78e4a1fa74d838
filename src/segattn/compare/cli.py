"""``segattn compare PLAN [--dataset synthetic|camvid] [--seeds N] [--out DIR]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from segattn.compare.plan import list_plans

    p = sub.add_parser("compare", help="train a plan's entries over seeds; report mIoU with error bars, cost and claims",
                       description="Run (or resume) every (entry, seed) of an experiment plan and write the report "
                                   f"(compare.md/json/csv/png). Shipped plans: {', '.join(list_plans())}.")
    p.add_argument("plan", help="a shipped plan name or a plan file (YAML/JSON)")
    p.add_argument("--dataset", default="synthetic", help="which of the plan's protocols to run (default synthetic)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per entry (default: the plan's)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder of the runs and the report (default outputs/compare/<plan>-<dataset>); "
                        "finished runs in it are skipped, interrupted ones resumed; several processes on one --out "
                        "share the runs (each leaves the runs another is training to it)")
    p.add_argument("--report-dir", type=Path, default=None,
                   help="write the report (and copies of the runs' result.json) here instead of --out")
    p.add_argument("--report-only", action="store_true", help="only aggregate the runs already finished")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (default 1)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep each finished run's last.pt / best.pt (deleted by default once the run is measured)")
    p.add_argument("--analyze", action="store_true",
                   help="after the runs, run `segattn analyze` on every finished run with weights (final.pt) and "
                        "write analysis.md/json/csv/png beside the report (stored per run: resumable; several processes "
                        "on one --out share the runs)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every run, after the protocol's (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segattn.compare.plan import PlanError, load_plan, validate_plan
    from segattn.compare.report import write_report
    from segattn.compare.runner import run_plan

    plan = load_plan(args.plan)
    if args.seeds is not None and args.seeds < 1:
        raise PlanError(f"--seeds must be >= 1, got {args.seeds}")
    if args.threads is not None and args.threads < 1:
        raise PlanError(f"--threads must be >= 1, got {args.threads}")
    out = args.out or Path("outputs") / "compare" / f"{plan.name}-{args.dataset}"
    if args.report_only:
        plan.protocol(args.dataset)
        validate_plan(plan, args.dataset, args.set)
        if not any(out.glob("runs/*/seed*/result.json")):
            raise PlanError(f"--report-only: no finished run under {out} (expected runs/<entry>/seed<k>/result.json)")
        rep = write_report(plan, out, args.dataset, report_dir=args.report_dir, seeds=args.seeds)
        print(open(rep["paths"]["markdown"]).read())
        if args.analyze:
            analyze_plan(args, plan, out)
        return 0
    summary = run_plan(plan, args.dataset, args.seeds, out, extra=args.set, threads=args.threads,
                       report_dir=args.report_dir, keep_checkpoints=args.keep_checkpoints)
    if summary["interrupted"]:
        cmd = f"segattn compare {args.plan} --dataset {args.dataset} --out {out}"
        if args.seeds is not None:
            cmd += f" --seeds {args.seeds}"
        if args.threads != 1:
            cmd += f" --threads {args.threads}"
        cmd += "".join(f" --set {s}" for s in args.set)
        print(f"interrupted; {summary['done']}/{summary['total']} runs finished; resume with `{cmd}`", file=sys.stderr)
        return 130
    if args.analyze:
        analyze_plan(args, plan, out)
    return 0


def analyze_plan(args: argparse.Namespace, plan: object, out: Path) -> None:
    """``--analyze``: every finished run of the plan with ``final.pt`` (seeds < --seeds) through
    :func:`segattn.analyze.run.analyze_runs`; the report goes to --report-dir (else --out)."""
    from segattn.analyze.run import analyze_runs
    from segattn.compare.plan import PlanError

    n_seeds = args.seeds or plan.seeds  # type: ignore[attr-defined]
    names = [e.name for e in plan.entries]  # type: ignore[attr-defined]
    runs = [out / "runs" / n / f"seed{s}" for s in range(n_seeds) for n in names
            if (out / "runs" / n / f"seed{s}" / "final.pt").is_file()
            and (out / "runs" / n / f"seed{s}" / "result.json").is_file()]
    if not runs:
        raise PlanError(f"--analyze: no finished run under {out} holds final.pt (runs finished before compare "
                        "kept weights have none)")
    target = args.report_dir or out
    cmd = f"segattn compare {args.plan} --dataset {args.dataset} --seeds {n_seeds} --out {out} --report-only --analyze"
    if args.report_dir:
        cmd += f" --report-dir {args.report_dir}"
    analyze_runs(runs, target, cmd, threads=args.threads, copy_to=args.report_dir)
