"""``segattn convert mmseg SOURCE --out DIR``: an mmseg checkpoint file or zoo entry -> a segattn folder."""

from __future__ import annotations

import argparse
import os


def _cmd_mmseg(args: argparse.Namespace) -> int:
    import warnings

    from segattn.convert.mmseg import save_mmseg

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if os.path.isfile(args.source):
            out = save_mmseg(args.source, args.out, args.config, overwrite=args.overwrite)
        else:
            from segattn.convert.zoo import convert_entry, zoo_entry

            entry = zoo_entry(args.source)
            out = convert_entry(entry, args.out, overwrite=args.overwrite, directory=args.cache_dir,
                                quiet=args.quiet, config=args.config)
    for w in caught:
        print(f"note: {w.message}")
    print(f"wrote {out} (segattn.from_pretrained / segattn eval, predict, viz, export take it)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``convert`` with its ``mmseg`` subcommand."""
    p = sub.add_parser("convert", help="convert another library's trained model into a segattn folder")
    csub = p.add_subparsers(dest="convert_command", required=True)
    p = csub.add_parser("mmseg", help="an mmsegmentation checkpoint (file or `segattn models --zoo` name), "
                                      "read without running code")
    p.add_argument("source", help="an mmseg .pth file, or a zoo entry name (downloaded, sha256-checked, cached)")
    p.add_argument("--out", required=True, help="output folder (save_pretrained format)")
    p.add_argument("--config", help="a merged mmseg config file that replaces the checkpoint's own (needed when "
                                    "it carries none; read as data, never executed)")
    p.add_argument("--overwrite", action="store_true", help="replace a segattn folder at --out")
    p.add_argument("--cache-dir", help="where zoo downloads go (default $SEGATTN_HOME/mmseg, ~/.cache/segattn/mmseg)")
    p.add_argument("--quiet", action="store_true", help="no download progress")
    p.set_defaults(func=_cmd_mmseg)
