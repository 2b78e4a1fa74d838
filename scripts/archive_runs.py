"""Keep a long `segattn compare --analyze` alive across machines without its weights.

    python scripts/archive_runs.py pack OUT ARCHIVE.tar.xz     # finished and measured runs, no weights
    python scripts/archive_runs.py unpack ARCHIVE.tar.xz OUT   # back into a compare folder, then resume

``pack`` stores every run folder of the compare output ``OUT`` (``runs/<entry>/seed<k>/``) that is
finished (``result.json``) and measured by this analysis version (``analysis.json``, see
:func:`segattn.analyze.run.stored_analysis`), with all its files but the weights and checkpoints
(``*.pt``) and the lock: about 25 kB per run instead of 1-3 MB. Runs still training, or finished but
not yet measured, are left out (they are trained again after ``unpack``, to the same result).

``unpack`` puts the runs back under ``OUT/runs/`` and never replaces a run folder that holds a
``result.json`` already. The same ``segattn compare ... --analyze --out OUT`` command then trains
only the missing runs and reads the archived runs' stored analyses (they count without weights:
:func:`segattn.analyze.run.analysable`).
"""

from __future__ import annotations

import argparse
import io
import lzma
import sys
import tarfile
from pathlib import Path, PurePosixPath
from typing import List, Tuple

from segattn.analyze.run import stored_analysis
from segattn.compare.rundir import RESULT
from segattn.errors import SegattnError
from segattn.io import atomic_write_bytes

SKIP_SUFFIXES = (".pt",)
SKIP_NAMES = (".segattn.lock",)


def archived_runs(out: Path) -> List[Path]:
    """The run folders of ``out`` that are finished and measured by this analysis version."""
    return sorted(d for d in out.glob("runs/*/seed*")
                  if (d / RESULT).is_file() and stored_analysis(d) is not None)


def pack(out: Path, archive: Path) -> int:
    if not (out / "runs").is_dir():
        raise SegattnError(f"{out} is not a compare output folder (no runs/ in it)")
    runs = archived_runs(out)
    if not runs:
        raise SegattnError(f"{out} holds no run that is finished and analysed by this version; nothing to pack")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for rdir in runs:
            for f in sorted(p for p in rdir.rglob("*") if p.is_file()):
                if f.suffix in SKIP_SUFFIXES or f.name in SKIP_NAMES:
                    continue
                tar.add(f, arcname=str(f.relative_to(out)), recursive=False)
    atomic_write_bytes(archive, buf.getvalue())
    print(f"packed {len(runs)} runs of {out} into {archive} ({len(buf.getvalue()) / 1e3:.0f} kB)")
    return len(runs)


def _run_of(name: str) -> PurePosixPath:
    parts = PurePosixPath(name).parts
    if len(parts) < 4 or parts[0] != "runs" or ".." in parts or PurePosixPath(name).is_absolute():
        raise SegattnError(f"archive member {name!r} is not under runs/<entry>/seed<k>/; not a pack of this script")
    return PurePosixPath(*parts[:3])


def _read(archive: Path) -> List[Tuple[str, bytes]]:
    """(member name, content) of every member, all read and checked before anything is written."""
    if not archive.is_file():
        raise SegattnError(f"archive {archive} does not exist")
    files = []
    try:
        with tarfile.open(archive, mode="r:xz") as tar:
            for m in tar:
                if not m.isfile():
                    raise SegattnError(f"archive member {m.name!r} is not a plain file; not a pack of this script")
                _run_of(m.name)
                data = tar.extractfile(m)
                assert data is not None
                files.append((m.name, data.read()))
    except (tarfile.TarError, lzma.LZMAError, EOFError) as exc:
        raise SegattnError(f"{archive} is not a complete xz tar archive ({exc})") from None
    return files


def unpack(archive: Path, out: Path) -> int:
    restored, kept = set(), set()
    for name, data in _read(archive):
        run = _run_of(name)
        if run in kept or (run not in restored and (out / run / RESULT).exists()):
            kept.add(run)  # a finished run is never replaced
            continue
        restored.add(run)
        atomic_write_bytes(out / name, data)
    print(f"unpacked {len(restored)} runs into {out}" + (f"; {len(kept)} already there were kept" if kept else ""))
    return len(restored)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="finished, measured runs of a compare folder into an archive, without weights")
    p.add_argument("out", type=Path)
    p.add_argument("archive", type=Path)
    u = sub.add_parser("unpack", help="an archive's runs back into a compare folder (finished runs are kept)")
    u.add_argument("archive", type=Path)
    u.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            pack(args.out, args.archive)
        else:
            unpack(args.archive, args.out)
    except (SegattnError, OSError) as exc:
        print(f"archive_runs {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
