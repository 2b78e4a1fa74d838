"""Named ImageNet weights: ``open-mmlab://resnet50_v1c``, ``ResNet50_Weights.IMAGENET1K_V2``, ...

``model.pretrained`` (and ``pretrained=`` of :func:`segattn.create_model` and the backbones) accepts,
besides a path, a URL or a ``save_pretrained`` folder, the names the published configs use:

=================================  ===============================================================
name                               file
=================================  ===============================================================
``open-mmlab://resnet50_v1c``      mmcv's ResNetV1c weights (also ``resnet18_v1c``, ``resnet101_v1c``;
                                   ``msra/hrnetv2_w18_small``, ``msra/hrnetv2_w18``, ``msra/hrnetv2_w48``)
``torchvision://resnet50``         torchvision's ``IMAGENET1K_V1`` file, as mmcv resolves it
``ResNet50_Weights.IMAGENET1K_V2`` torchvision's enum names (``IMAGENET1K_V1``, ``IMAGENET1K_V2``,
                                   ``DEFAULT``), with or without ``torchvision://`` in front
``timm://resnet50d.ra2_in1k``      timm's ResNet-D files (``resnet18d``..``resnet101d``); also
                                   ``timm://resnet50.tv_in1k`` / ``.tv2_in1k`` (the torchvision files)
=================================  ===============================================================

The names, URLs and checksums are data: ``named_weights.json`` beside this file. Each file is
fetched only when its name is passed, through :func:`segattn.data.download.fetch` (resumable,
atomic, checksum-verified; a file already in the cache and matching is reused) into
``$SEGATTN_HOME/weights`` (default ``~/.cache/segattn/weights``). The publishers name their files
``<name>-<first 8 hex digits of sha256>.pth`` and their own loaders check only that prefix; the
manifest records that prefix (the full digest where known), and the check is a prefix match of at
least 8 hex digits. Mirrors: ``SEGATTN_MMSEG_MIRROR`` replaces ``https://download.openmmlab.com``
(as for the mmseg zoo) and ``SEGATTN_WEIGHTS_MIRROR`` replaces the scheme and host of every other
URL (``https://download.pytorch.org/models/x.pth`` -> ``$SEGATTN_WEIGHTS_MIRROR/models/x.pth``).
A timm file needs no timm: it is a plain state dict that the ResNet loader maps.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Union
from urllib.parse import urlsplit

from segattn.data.download import OPENMMLAB, cache_home, mmseg_mirrored  # noqa: F401  (OPENMMLAB re-exported)
from segattn.errors import SegattnError

MANIFEST = Path(__file__).resolve().parent / "named_weights.json"
_SCHEMES = ("open-mmlab://", "openmmlab://", "torchvision://", "timm://")
_ENUM = re.compile(r"^(torchvision://)?[A-Za-z0-9]+_Weights\.[A-Za-z0-9_]+$")
_HEX = re.compile(r"^[0-9a-f]{8,64}$")


class NamedWeightsError(SegattnError):
    """An unknown weight name, or a manifest entry that cannot be used."""


@dataclass(frozen=True)
class NamedWeights:
    """One manifest entry: the canonical ``name``, its ``aliases``, the publisher's ``url``, the
    ``sha256`` (all 64 hex digits, or the publisher's 8-digit prefix), the segattn ``backbone`` it fits
    (``None`` where no segattn backbone reads it) and where the facts come from (``source``)."""

    name: str
    aliases: List[str]
    url: str
    sha256: str
    backbone: Optional[str]
    source: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _key(name: str) -> str:
    """Lookup key: scheme ``openmmlab://`` spelled like mmcv's, case-insensitive."""
    key = name.strip()
    if key.lower().startswith("openmmlab://"):
        key = "open-mmlab://" + key[len("openmmlab://"):]
    if key.lower().startswith("torchvision://") and "_weights." in key.lower():
        key = key[len("torchvision://"):]
    return key.lower()


@lru_cache(maxsize=1)
def _manifest() -> Dict[str, NamedWeights]:
    with open(MANIFEST, encoding="utf-8") as f:
        data = json.load(f)
    table: Dict[str, NamedWeights] = {}
    for raw in data["entries"]:
        entry = NamedWeights(**raw)
        if not _HEX.match(entry.sha256):
            raise NamedWeightsError(f"{MANIFEST.name}: {entry.name}: sha256 must be 8 to 64 lower-case hex "
                                    f"digits, got {entry.sha256!r}")
        for name in (entry.name, *entry.aliases):
            table[_key(name)] = entry
    return table


def named_weights() -> List[NamedWeights]:
    """Every manifest entry, in manifest order."""
    seen: Dict[str, NamedWeights] = {}
    for entry in _manifest().values():
        seen.setdefault(entry.name, entry)
    return list(seen.values())


def is_named(source: object) -> bool:
    """True if ``source`` is written as a weight name (``open-mmlab://``, ``torchvision://``,
    ``timm://`` or ``<Arch>_Weights.<TAG>``), known or not; paths and URLs are not names."""
    if not isinstance(source, str):
        return False
    text = source.strip()
    return text.lower().startswith(_SCHEMES) or (bool(_ENUM.match(text)) and not os.path.exists(text))


def named_entry(name: str) -> NamedWeights:
    """The entry for ``name`` (or one of its aliases); :class:`NamedWeightsError` with the closest
    names otherwise."""
    entry = _manifest().get(_key(name))
    if entry is not None:
        return entry
    names = sorted({n for e in named_weights() for n in (e.name, *e.aliases)})
    close = difflib.get_close_matches(name.strip(), names, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"known names: {', '.join(e.name for e in named_weights())}"
    raise NamedWeightsError(f"unknown weight name {name!r}; {hint} (or pass a file path or an https:// URL)")


def cache_dir() -> Path:
    """``$SEGATTN_HOME/weights`` (default ``~/.cache/segattn/weights``)."""
    return cache_home("weights")


def resolved_url(entry: NamedWeights) -> str:
    """``entry.url`` with the mirror variables applied (see the module docstring)."""
    if entry.url.startswith(OPENMMLAB):
        return mmseg_mirrored(entry.url)
    mirror = os.environ.get("SEGATTN_WEIGHTS_MIRROR")
    if mirror and not entry.url.startswith(OPENMMLAB):
        parts = urlsplit(entry.url)
        return mirror.rstrip("/") + parts.path
    return entry.url


def download_named(name: str, directory: Union[None, str, os.PathLike] = None, quiet: bool = False) -> Path:
    """Fetch the file of ``name`` into ``directory`` (default :func:`cache_dir`), checksum-verified;
    a matching file already there is reused. Failures are :class:`NamedWeightsError` naming the
    weights, the URL and the cause."""
    from segattn.data.download import DownloadError, fetch

    entry = named_entry(name)
    dest = Path(directory) if directory is not None else cache_dir()
    url, final = resolved_url(entry), dest / entry.filename
    rank = os.environ.get("LOCAL_RANK", "0") or "0"
    try:
        if rank == "0" or final.exists():
            return fetch(url, final, sha256=entry.sha256, quiet=quiet)
        # other torchrun ranks: a private partial file, then an atomic rename (never two writers on one .part)
        got = fetch(url, dest / f".rank{rank}" / entry.filename, sha256=entry.sha256, quiet=True)
        os.replace(got, final)
        return final
    except DownloadError as exc:
        raise NamedWeightsError(f"weights {entry.name!r}: {exc} (set SEGATTN_MMSEG_MIRROR / SEGATTN_WEIGHTS_MIRROR "
                                f"for a mirror, or download {entry.url} yourself and pass the file)") from None
    except OSError as exc:
        raise NamedWeightsError(f"weights {entry.name!r}: cannot write {dest}: {exc.strerror or exc} "
                                "(set SEGATTN_HOME to a writable folder)") from None


def resolve_pretrained(source: Optional[str], quiet: bool = False) -> Optional[str]:
    """``source`` unchanged unless it is a weight name; then the path of its verified local file."""
    if not is_named(source):
        return source
    return os.fspath(download_named(str(source), quiet=quiet))


__all__ = ["NamedWeights", "NamedWeightsError", "named_weights", "named_entry", "is_named", "cache_dir",
           "resolved_url", "download_named", "resolve_pretrained"]
