"""ADE20K SceneParsing (ADEChallengeData2016): 150 classes, reduce-zero-label."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from segattn.data.datasets.base import SegmentationDataset, Transform, pair_files, require_dir
from segattn.data.palette import bit_palette
from segattn.registry import DATASETS

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table",
    "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island",
    "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman",
    "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy",
    "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce",
    "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip


@DATASETS.register("ade20k", paper="Zhou et al., CVPR 2017", classes=150, folder="ade20k")
class ADE20K(SegmentationDataset):
    """ADE20K SceneParsing benchmark (Zhou et al., CVPR 2017), 150 classes.

    Layout: ``root`` is ``ADEChallengeData2016/`` or its parent, holding ``images/{training,validation}/
    *.jpg`` and ``annotations/{training,validation}/*.png``; split "train" or "val". Raw label 0
    ("other") becomes the ignore index and 1..150 become 0..149 (``reduce_zero_label``, as mmseg);
    raw values above 150 are errors. With ``reduce_zero_label=False`` "other" is class 0 of 151. The palette is generated (VOC bit rule, skipping black).
    """

    CLASSES = ADE20K_CLASSES
    PALETTE = tuple(bit_palette(151)[1:])
    SPLITS = {"train": "training", "val": "validation"}

    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        transform: Optional[Transform] = None,
        reduce_zero_label: bool = True,
    ) -> None:
        if split not in self.SPLITS:
            raise ValueError(f"ADE20K split must be one of {tuple(self.SPLITS)}, got {split!r}")
        base = require_dir(Path(root), "ADE20K root")
        if (base / "ADEChallengeData2016").is_dir():
            base = base / "ADEChallengeData2016"
        folder = self.SPLITS[split]
        files = pair_files(base / "images" / folder, base / "annotations" / folder)
        classes, palette = list(self.CLASSES), list(self.PALETTE)
        if not reduce_zero_label:  # raw labels: 0 "other" is a class of its own
            classes, palette = ["other"] + classes, [(0, 0, 0)] + palette
        super().__init__(
            files, transform, classes=classes, palette=palette, reduce_zero_label=reduce_zero_label
        )
        self.root, self.split = base, split
