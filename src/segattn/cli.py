"""``segattn`` command line: argparse subcommands that call the layers below, nothing more."""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from typing import Any, Callable, List, Optional, Set


def _compare_analyze_step(*args: Any) -> Any:
    """``segattn compare --analyze``: composed here, above both packages (compare never imports analyze)."""
    from segattn.analyze.run import analyze_plan

    return analyze_plan(*args)


def _compare_analyze_run(rdir: Any) -> None:
    """``segattn compare --analyze``: one run measured as soon as it finished (module-level: it is
    pickled into the ``-j`` workers)."""
    from segattn.analyze.run import measure_finished_run

    measure_finished_run(rdir)


def _cmd_modules(args: argparse.Namespace) -> int:
    from segattn.api import list_modules, module_info

    names = list_modules(args.pattern)
    if not names:
        raise ValueError(f"no registered module matches {args.pattern!r}; `segattn modules` lists them all")
    rows = [module_info(n) for n in names]
    print(f"{'name':<18} {'family':<12} {'order':<26} paper")
    for r in rows:
        print(f"{r['name']:<18} {r.get('family', ''):<12} {r.get('order', ''):<26} {r.get('paper', '')}")
    return 0


def _cmd_configs(args: argparse.Namespace) -> int:
    from segattn.engine.config import list_configs

    names = list_configs(args.pattern)
    if not names:
        raise ValueError(f"no shipped config matches {args.pattern!r}; `segattn configs` lists them all")
    for name in names:
        print(name)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from segattn.engine.train import train
    from segattn.engine.workdir import resume_hint, train_config

    cfg = train_config(args.config, list(args.set), args.work_dir, args.resume, args.overwrite,
                       args.allow_config_change, init=args.init)
    if args.nproc is not None:
        return _launch_train(args, cfg)
    summary = train(cfg)
    if summary.get("interrupted"):
        hint_set = list(args.set) + ([f"model.init={args.init}"] if args.init else [])
        print(f"interrupted at iteration {summary['iteration']}; "
              f"{resume_hint(cfg, args.config, hint_set, args.allow_config_change)}", file=sys.stderr)
        return 130
    return 0


def _launch_train(args: argparse.Namespace, cfg: Any) -> int:
    """``segattn train --nproc N``: check the run once here, then N workers with the same arguments."""
    from segattn.engine.launch import check_nproc, launch_local
    from segattn.engine.workdir import check_start

    check_nproc(args.nproc)
    check_start(cfg)
    worker = ["train"] + [a for flag, value in (("--config", args.config), ("--work-dir", args.work_dir),
                                                ("--resume", args.resume), ("--init", args.init))
                          if value is not None for a in (flag, value)]
    worker += ["--overwrite"] * args.overwrite + ["--allow-config-change"] * args.allow_config_change
    for item in args.set:
        worker += ["--set", item]
    return launch_local(args.nproc, worker)


def _cmd_eval(args: argparse.Namespace) -> int:
    from segattn.engine.metrics import format_metrics
    from segattn.engine.run import run_evaluation

    metrics = run_evaluation(args.checkpoint, args.config, list(args.set), args.out, overwrite=args.overwrite,
                             device=args.device)
    if metrics is not None:
        print(format_metrics(metrics))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from segattn.engine.predict import predict

    result = predict(args.checkpoint, args.inputs, args.out, list(args.set), args.device, args.alpha,
                     strict=args.strict, overwrite=args.overwrite)
    if not result.written:
        from segattn.errors import SegattnError

        raise SegattnError(f"no input could be read ({len(result.skipped)} skipped); nothing was written")
    for w in result.written:
        print(w["overlay"])
    skipped = f", {len(result.skipped)} unreadable input(s) skipped" if result.skipped else ""
    print(f"{len(result.written)} image(s) -> {args.out}{skipped}", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from segattn.demo import run_demo

    report = run_demo(args.out, quick=args.quick, context=args.context, iters=args.iters, threads=args.threads,
                      overwrite=args.overwrite)
    print(report["markdown"])
    print(f"report: {report['paths']['markdown']}", file=sys.stderr)
    return 0


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="dataset utilities")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("download", help="download, verify and extract a public dataset archive")
    try:
        from segattn.data.download import add_arguments, run
    except ImportError:  # data layer without download helpers
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda a: (print("segattn.data.download is not available", file=sys.stderr), 2)[1])
        return
    add_arguments(p)
    p.set_defaults(func=run)


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value with dotted keys, e.g. --set schedule.iters=100 (repeatable)")


def _add_engine_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a config (torchrun-aware)")
    p.add_argument("--config", help="YAML/JSON file or a shipped name (see `segattn configs`); "
                   "when resuming, default: the config stored in the work dir")
    p.add_argument("--work-dir", help="output folder (checkpoints, metrics.jsonl, config.json, tb/); must be empty "
                   "unless resuming or --overwrite")
    p.add_argument("--resume", help="'auto' for <work_dir>/last.pt (an error if there is none), or a checkpoint path")
    p.add_argument("--overwrite", action="store_true", help="replace the earlier run in a non-empty work dir")
    p.add_argument("--init", metavar="FOLDER", help="fine-tune from a save_pretrained / `segattn convert mmseg` "
                   "folder: its architecture, normalisation and eval settings, every layer's weights (the "
                   "classifiers fresh for another class count); config key model.init")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume although the config differs from the stored one (the differences are printed)")
    p.add_argument("--nproc", type=int, metavar="N", help="train with N local DDP processes (GPUs: one each; CPU: "
                   "gloo), started here as torchrun --standalone would, without torchrun's report on a failure")
    _add_set(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint: mIoU, per-class IoU, aAcc, mAcc")
    p.add_argument("--checkpoint", required=True, help="last.pt / best.pt written by `segattn train`")
    p.add_argument("--config", help="config to use instead of the one stored in the checkpoint")
    p.add_argument("--out", help="write the metrics as JSON here (checked before the evaluation starts)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the config's train.device)")
    _add_set(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="images or folders -> colourised masks and overlays")
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("--checkpoint", required=True, help="training checkpoint or save_pretrained folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1]")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable input (default: skip it, warn)")
    p.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    _add_set(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("demo", help="train a context model and the FCN baseline on synthetic data; write a report")
    p.add_argument("--out", default="outputs/demo", help="report folder")
    p.add_argument("--overwrite", action="store_true", help="replace the report of an earlier demo in --out")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run (tiny models, few iterations)")
    p.add_argument("--context", default="pspnet", help="context model to compare with fcn (any model name)")
    p.add_argument("--iters", type=int, default=None, help="training iterations per model")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is robust on a busy machine; 2 is faster on an idle 2-core one)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("configs", help="list shipped configs")
    p.add_argument("pattern", nargs="?", default="*")
    p.set_defaults(func=_cmd_configs)
    _add_data_parser(sub)


def _version() -> str:
    from segattn import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segattn", description=__doc__)
    parser.add_argument("--version", action="version", version=f"segattn {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("modules", help="list registered context modules")
    p.add_argument("pattern", nargs="?", default="*")
    p.set_defaults(func=_cmd_modules)

    from segattn.bench.cli import add_parser as add_bench_parser

    add_bench_parser(sub)
    from segattn.export_cli import add_parser as add_export_parser  # export, models

    add_export_parser(sub)
    __import__("segattn.viz.cli", fromlist=["add_parser"]).add_parser(sub)
    _add_engine_parsers(sub)
    from segattn.compare.cli import add_parser as add_compare_parser

    add_compare_parser(sub, analyze_step=_compare_analyze_step, analyze_run=_compare_analyze_run)
    from segattn.analyze.cli import add_parser as add_analyze_parser

    add_analyze_parser(sub)
    from segattn.convert.cli import add_parser as add_convert_parser

    add_convert_parser(sub)
    return parser


def _value_options(parser: argparse.ArgumentParser) -> Set[str]:
    """Option strings (of ``parser`` and its subcommands) that take one value."""
    found: Set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                found |= _value_options(sub)
        elif action.option_strings and action.nargs is None:
            found.update(action.option_strings)
    return found


def join_negative_values(parser: argparse.ArgumentParser, argv: List[str]) -> List[str]:
    """``--query -1,5`` -> ``--query=-1,5``: argparse reads a value that starts with ``-`` and is not a
    plain number as an option ("expected one argument"); joined, it reaches the option's range check."""
    takes_value = _value_options(parser)
    out: List[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in takes_value and i + 1 < len(argv) and re.match(r"-\.?\d", argv[i + 1]):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def _warning_format(prog: str, default: Callable[..., str]) -> Callable[..., str]:
    """``warnings.formatwarning`` that prints segattn's own warnings (input warnings, and any warning
    issued from segattn's code, such as SGR without a knowledge graph) as one line,
    ``segattn <cmd>: warning: ...``; other libraries' warnings keep Python's format."""
    from segattn.errors import NonFiniteInputWarning

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep

    def fmt(message: Any, category: type, filename: str, lineno: int, line: Optional[str] = None) -> str:
        if issubclass(category, NonFiniteInputWarning) or os.path.abspath(filename).startswith(package):
            return f"{prog}: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    return fmt


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe


def _silence_stdout() -> None:
    """Point stdout at the null device so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _debug() -> bool:
    return os.environ.get("SEGATTN_DEBUG", "") not in ("", "0")


def main(argv: Optional[List[str]] = None) -> int:
    """Run one subcommand. Every failure is one line on stderr, ``segattn <cmd>: error: <message>``,
    with exit code 2 (an interrupt: exit 130; a closed output pipe, as in ``segattn models --zoo | head``:
    no message, exit 141 like a tool stopped by SIGPIPE); ``SEGATTN_DEBUG=1`` re-raises to show the traceback.

    Messages come from :func:`segattn.errors.error_message`: errors raised for bad input name the
    file, key or value at fault; an ``OSError`` names its path; other exceptions are prefixed with
    their type.
    """
    from segattn.errors import error_message

    parser = build_parser()
    args = parser.parse_args(join_negative_values(parser, sys.argv[1:] if argv is None else list(argv)))
    prog = f"segattn {args.command}"
    previous_format = warnings.formatwarning
    warnings.formatwarning = _warning_format(prog, previous_format)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:  # `segattn models --zoo | head`: stop quietly, as other command-line tools do
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        if _debug():
            raise
        print(f"{prog}: error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if _debug():
            raise
        print(f"{prog}: error: {error_message(exc)}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    finally:
        warnings.formatwarning = previous_format


__all__ = ["main", "build_parser"]
