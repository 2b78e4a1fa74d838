"""mmsegmentation's published checkpoints of the heads segattn converts, as data.

``mmseg_zoo.json`` beside this file (written by ``scripts/make_mmseg_zoo.py`` from the metafiles of mmseg 1.2.2)
lists per entry: the config name, method, backbone, dataset, crop, iterations, published single-scale
and ms+flip mIoU, the weights URL with the first 8 hex digits of its sha256 (mmseg names its files so),
and the parts of the merged config the converter reads (used when a checkpoint carries no config).

Nothing is downloaded implicitly: :func:`download` runs only when asked (``segattn convert mmseg
NAME``), through :func:`segattn.data.download.fetch` (resumable, sha256-verified). Files are cached
in ``$SEGATTN_HOME/mmseg`` (default ``~/.cache/segattn/mmseg``); ``SEGATTN_MMSEG_MIRROR`` replaces
``https://download.openmmlab.com`` for users behind a mirror.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from segattn.data.download import OPENMMLAB, cache_home, mmseg_mirrored  # noqa: F401  (OPENMMLAB re-exported)
from segattn.errors import SegattnError

MANIFEST = Path(__file__).resolve().parent / "mmseg_zoo.json"


@dataclass(frozen=True)
class ZooEntry:
    """One published mmseg checkpoint (see the module docstring)."""

    name: str
    method: str
    model: str
    backbone: str
    dataset: str
    crop_size: List[int]
    iterations: int
    miou: Optional[float]
    miou_ms_flip: Optional[float]
    url: str
    sha256_prefix: Optional[str]
    config: Dict[str, Any]

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@lru_cache(maxsize=1)
def _manifest() -> List[ZooEntry]:
    with open(MANIFEST, encoding="utf-8") as f:
        data = json.load(f)
    return [ZooEntry(**entry) for entry in data["entries"]]


def zoo_entries(pattern: str = "*") -> List[ZooEntry]:
    """Entries whose name matches the shell-style ``pattern`` (case-insensitive), in manifest order."""
    pat = pattern.lower()
    if not any(ch in pat for ch in "*?["):
        pat = f"*{pat}*"
    return [e for e in _manifest() if fnmatch.fnmatchcase(e.name.lower(), pat)]


def zoo_entry(name: str) -> ZooEntry:
    """The entry called ``name``; a :class:`SegattnError` with the closest names otherwise."""
    for entry in _manifest():
        if entry.name == name:
            return entry
    close = difflib.get_close_matches(name, [e.name for e in _manifest()], n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `segattn models --zoo` lists them"
    raise SegattnError(f"{name!r} is neither a checkpoint file nor an mmseg zoo entry{hint}")


def cache_dir() -> Path:
    """``$SEGATTN_HOME/mmseg`` (default ``~/.cache/segattn/mmseg``)."""
    return cache_home("mmseg")


def resolved_url(entry: ZooEntry) -> str:
    """``entry.url`` with ``SEGATTN_MMSEG_MIRROR`` applied."""
    return mmseg_mirrored(entry.url)


def download(entry: ZooEntry, directory: Union[None, str, os.PathLike] = None, quiet: bool = False) -> Path:
    """Fetch ``entry``'s checkpoint into ``directory`` (default :func:`cache_dir`), verified against the
    sha256 prefix in its URL; an already complete file is reused, a partial one resumed."""
    from segattn.data.download import fetch

    dest = Path(directory) if directory is not None else cache_dir()
    return fetch(resolved_url(entry), dest / entry.filename, sha256=entry.sha256_prefix, quiet=quiet)


def convert_entry(entry: ZooEntry, out: Union[str, os.PathLike], *, overwrite: bool = False,
                  directory: Union[None, str, os.PathLike] = None, quiet: bool = False,
                  config: Union[None, str, os.PathLike] = None) -> str:
    """Download (if needed) and convert ``entry`` to a segattn folder whose card carries its published mIoU.

    The file's own config is used; ``config`` (a merged config file) replaces it, and the manifest's
    copy is used when the file has no readable config."""
    from segattn.convert.mmseg import check_out_folder, save_mmseg

    check_out_folder(out, overwrite)  # before a long download
    path = download(entry, directory, quiet=quiet)
    metrics = {"mIoU": entry.miou / 100} if entry.miou is not None else {}
    if entry.miou_ms_flip is not None:
        metrics["mIoU_ms_flip"] = entry.miou_ms_flip / 100
    return save_mmseg(path, out, config, overwrite=overwrite, metrics=metrics, fallback_config=entry.config,
                      source=f"mmsegmentation {entry.name} ({entry.url}); mIoU as published by mmseg")


def table_lines(entries: List[ZooEntry]) -> List[str]:
    """Rows for ``segattn models --zoo``."""
    lines = [f"{'name':<58} {'model':<10} {'dataset':<22} {'mIoU':>6} {'ms+flip':>7}"]
    for e in entries:
        ms = f"{e.miou_ms_flip:.2f}" if e.miou_ms_flip is not None else "-"
        miou = f"{e.miou:.2f}" if e.miou is not None else "-"
        lines.append(f"{e.name:<58} {e.model:<10} {e.dataset:<22} {miou:>6} {ms:>7}")
    return lines


__all__ = ["ZooEntry", "zoo_entries", "zoo_entry", "download", "convert_entry", "cache_dir", "table_lines"]
