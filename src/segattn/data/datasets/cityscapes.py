"""Cityscapes fine annotations, evaluated on the 19 train ids (labelIds are mapped, the rest ignored)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

from segattn.data.datasets.base import SegmentationDataset, Transform, pair_files, require_dir
from segattn.registry import DATASETS

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip
# labelId -> trainId for the 19 evaluated classes (cityscapesScripts' label table); every other id
# in 0..33 (unlabeled, ego vehicle, ..., parking, rail track, guard rail, bridge, tunnel, polegroup,
# caravan, trailer) is ignored.
_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
              24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
LABEL_TO_TRAIN_ID: Dict[int, int] = {i: _TRAIN_IDS.get(i, 255) for i in range(34)}


@DATASETS.register("cityscapes", paper="Cordts et al., CVPR 2016", classes=19, folder="cityscapes")
class Cityscapes(SegmentationDataset):
    """Cityscapes (Cordts et al., CVPR 2016), fine annotations, 19 classes, ignore 255.

    Layout under ``root`` (the official zips unpacked): ``leftImg8bit/<split>/<city>/*_leftImg8bit.png``
    and ``gtFine/<split>/<city>/*_gtFine_labelIds.png``; split in train / val / test. ``label_type``
    "labelIds" (default) maps the 34 label ids to the 19 train ids; "labelTrainIds" reads
    ``*_gtFine_labelTrainIds.png`` files that are already converted.
    """

    CLASSES = CITYSCAPES_CLASSES
    PALETTE = CITYSCAPES_PALETTE
    SPLITS = ("train", "val", "test")

    @classmethod
    def label_map_for(cls, dataset_kwargs: Dict[str, Any]) -> Optional[Dict[int, int]]:
        """Label ids -> train ids for ``label_type="labelIds"`` (default); none for ``labelTrainIds``."""
        return LABEL_TO_TRAIN_ID if dataset_kwargs.get("label_type", "labelIds") == "labelIds" else {}

    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        transform: Optional[Transform] = None,
        label_type: str = "labelIds",
    ) -> None:
        if split not in self.SPLITS:
            raise ValueError(f"Cityscapes split must be one of {self.SPLITS}, got {split!r}")
        if label_type not in ("labelIds", "labelTrainIds"):
            raise ValueError(f"label_type must be 'labelIds' or 'labelTrainIds', got {label_type!r}")
        base = require_dir(Path(root), "Cityscapes root")
        files = pair_files(
            base / "leftImg8bit" / split,
            base / "gtFine" / split,
            image_suffix=("_leftImg8bit.png",),
            mask_suffix=(f"_gtFine_{label_type}.png",),
            recursive=True,
        )
        super().__init__(files, transform, label_map=self.label_map_for({"label_type": label_type}))
        self.root, self.split = base, split
