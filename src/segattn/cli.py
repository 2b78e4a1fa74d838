"""``segattn`` command line: argparse subcommands that call the layers below, nothing more."""

from __future__ import annotations

import argparse
from typing import List, Optional


def _cmd_modules(args: argparse.Namespace) -> int:
    from segattn.api import list_modules, module_info

    rows = [module_info(n) for n in list_modules(args.pattern)]
    print(f"{'name':<18} {'family':<12} {'order':<26} paper")
    for r in rows:
        print(f"{r['name']:<18} {r.get('family', ''):<12} {r.get('order', ''):<26} {r.get('paper', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segattn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("modules", help="list registered context modules")
    p.add_argument("pattern", nargs="?", default="*")
    p.set_defaults(func=_cmd_modules)

    from segattn.bench.cli import add_parser as add_bench_parser

    add_bench_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
