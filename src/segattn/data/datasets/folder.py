"""Generic folder layout: ``images/`` + ``masks/`` (matched by file name) + a class list file."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple, Union

from segattn.data.datasets.base import (
    Color,
    DatasetError,
    SegmentationDataset,
    Transform,
    pair_files,
    read_list,
    require_dir,
)
from segattn.registry import DATASETS


def read_classes(path: Path) -> Tuple[List[str], Optional[List[Color]]]:
    """Class names (one per line, in id order) and, if every line ends with ``R G B``, the palette.

    Lines look like ``road`` or ``traffic light 250 170 30`` (commas are accepted as separators);
    blank lines and lines starting with ``#`` are skipped.
    """
    names: List[str] = []
    colors: List[Color] = []
    for line in read_list(path):
        if line.startswith("#"):
            continue
        tokens = line.replace(",", " ").split()
        tail = tokens[-3:]
        if len(tokens) > 3 and all(t.isdigit() and int(t) < 256 for t in tail):
            names.append(" ".join(tokens[:-3]))
            colors.append((int(tail[0]), int(tail[1]), int(tail[2])))
        else:
            names.append(" ".join(tokens))
    if not names:
        raise DatasetError(f"class list {path} names no classes")
    return names, (colors if len(colors) == len(names) else None)


@DATASETS.register("folder", paper="-", classes=None, folder="folder")
class FolderDataset(SegmentationDataset):
    """Your own data: ``root/images/*`` and ``root/masks/*.png`` with the same stems, plus ``classes.txt``.

    Masks are single-channel PNGs holding class ids 0..C-1 (C = lines of the class file) and
    ``ignore_index`` for void. Splits: ``split=None`` uses every pair; otherwise ``images/<split>/`` +
    ``masks/<split>/`` if those folders exist, else the stems listed in ``root/<split>.txt``.
    ``reduce_zero_label`` treats 0 as void and shifts the rest down by one.
    """

    def __init__(
        self,
        root: Union[str, Path],
        split: Optional[str] = None,
        transform: Optional[Transform] = None,
        classes_file: str = "classes.txt",
        image_dir: str = "images",
        mask_dir: str = "masks",
        ignore_index: int = 255,
        reduce_zero_label: bool = False,
    ) -> None:
        base = require_dir(Path(root), "dataset root")
        classes, palette = read_classes(base / classes_file)
        images, masks = (
            require_dir(base / image_dir, "image folder"),
            require_dir(base / mask_dir, "mask folder"),
        )
        if split is None or split == "all":
            files = pair_files(images, masks)
        elif (images / split).is_dir():
            files = pair_files(images / split, masks / split)
        elif (base / f"{split}.txt").is_file():
            files = self._from_list(base / f"{split}.txt", pair_files(images, masks))
        else:
            raise FileNotFoundError(
                f"no split {split!r} in {base}: expected {images / split}/ or {base / (split + '.txt')}; "
                "pass split=None to use every image"
            )
        super().__init__(
            files, transform, classes=classes, palette=palette, ignore_index=ignore_index,
            reduce_zero_label=reduce_zero_label,
        )  # fmt: skip
        self.root, self.split = base, split

    @staticmethod
    def _from_list(list_file: Path, pairs: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
        by_stem = {Path(img).stem: (img, msk) for img, msk in pairs}
        wanted = read_list(list_file)
        missing = [s for s in wanted if s not in by_stem]
        if missing:
            raise DatasetError(
                f"{list_file} lists {len(missing)} name(s) with no image/mask pair: {missing[:5]}"
            )
        return [by_stem[s] for s in wanted]
