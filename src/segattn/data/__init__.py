"""Datasets, joint transforms, the synthetic context dataset, download helpers and mask colouring.

``build_dataset(name, root=None, split="train", transform=None, **kw)`` builds a registered dataset;
``list_datasets()`` names them. Without ``root`` the folder is looked up as ``$SEGATTN_DATA/<folder>``,
then ``./data/<folder>`` (``segattn data download NAME --root data/<folder>`` fetches or says how to get it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional

from segattn.data import datasets as _datasets  # noqa: F401  (registers the readers)
from segattn.data import synthetic as _synthetic  # noqa: F401  (registers "synthetic")
from segattn.data.datasets.base import DatasetError, SegmentationDataset, Transform
from segattn.data.palette import colorize, overlay
from segattn.data.synthetic import SyntheticContext
from segattn.registry import DATASETS


def list_datasets(pattern: str = "*") -> List[str]:
    """Registered dataset names matching the shell-style ``pattern`` (sorted)."""
    return DATASETS.list(pattern)


def default_root(name: str) -> Optional[Path]:
    """The first existing candidate folder for dataset ``name``, or None."""
    folder = DATASETS.meta(name).get("folder")
    if folder is None:
        return None
    candidates = []
    if os.environ.get("SEGATTN_DATA"):
        candidates.append(Path(os.environ["SEGATTN_DATA"]) / folder)
    candidates.append(Path("data") / folder)
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        f"no root given for dataset {name!r} and none of {', '.join(str(c) for c in candidates)} exists; "
        f"pass root=DIR (command line: --set data.root=DIR) or set SEGATTN_DATA to the folder holding {folder}/ "
        f"(`segattn data download {name} --root data/{folder}` fetches it or says where to get it)"
    )


def mask_reader(name: str, **dataset_kwargs: Any) -> SegmentationDataset:
    """A reader of no files whose ``map_labels`` turns raw masks into training ids as dataset ``name``
    does with ``dataset_kwargs`` (CamVid void 11 -> 255, ADE20K reduce-zero-label, Cityscapes label ids);
    for a dataset that reads no mask files (``synthetic``) the identity. An unknown name raises."""
    factory = DATASETS.get(name)
    if isinstance(factory, type) and issubclass(factory, SegmentationDataset):
        return factory.mask_reader(**dataset_kwargs)
    return SegmentationDataset([])


def build_dataset(
    name: str,
    root: Optional[str] = None,
    split: str = "train",
    transform: Optional[Transform] = None,
    **kw: Any,
) -> Any:
    """Build dataset ``name`` (see ``list_datasets``); unknown names/keywords raise with close matches."""
    if root is None:
        found = default_root(name)
        root = str(found) if found is not None else None
    return DATASETS.create(name, root=root, split=split, transform=transform, **kw)


__all__ = [
    "build_dataset",
    "list_datasets",
    "default_root",
    "mask_reader",
    "colorize",
    "overlay",
    "SegmentationDataset",
    "SyntheticContext",
    "DatasetError",
]
