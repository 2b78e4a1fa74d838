"""CamVid in the 11-class SegNet layout: ``train/ trainannot/ val/ valannot/ [test/ testannot/]``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from segattn.data.datasets.base import SegmentationDataset, Transform, pair_files, require_dir
from segattn.registry import DATASETS

CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "sidewalk", "tree",
    "sign/symbol", "fence", "car", "pedestrian", "bicyclist",
)  # fmt: skip
CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip


@DATASETS.register("camvid", paper="Brostow et al., PRL 2009", classes=11, folder="camvid")
class CamVid(SegmentationDataset):
    """CamVid, SegNet's 11 classes at 360x480 (Brostow et al., "Semantic object classes in video", 2009).

    Layout under ``root``: ``<split>/`` RGB PNGs and ``<split>annot/`` mode-L label PNGs with the same
    file names, for split in train / val / test. Label 11 is "void" and becomes ``ignore_index`` (255);
    values 12..254 are errors (``DatasetError`` naming the file).
    """

    CLASSES = CAMVID_CLASSES
    PALETTE = CAMVID_PALETTE
    LABEL_MAP = {11: 255}
    SPLITS = ("train", "val", "test")

    def __init__(
        self, root: Union[str, Path], split: str = "train", transform: Optional[Transform] = None
    ) -> None:
        if split not in self.SPLITS:
            raise ValueError(f"CamVid split must be one of {self.SPLITS}, got {split!r}")
        base = require_dir(Path(root), "CamVid root")
        files = pair_files(base / split, base / f"{split}annot", mask_suffix=(".png",))
        super().__init__(files, transform)
        self.root, self.split = base, split
