"""Shared machinery of the file-based segmentation datasets.

A dataset is a list of (image file, mask file) pairs plus class metadata. Reading one item:
decode the image as RGB uint8 and the mask as a single-channel integer map, map raw label values to
training ids through a 256-entry (or larger) look-up table, check that every value is a class id or
the ignore index, apply the joint transform, and convert to tensors. Every failure names the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

Color = Tuple[int, int, int]
Pair = Tuple[str, str]
Transform = Callable[[np.ndarray, np.ndarray], Tuple[Any, Any]]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(ValueError):
    """A dataset file is missing, unreadable, unmatched or holds invalid labels (the message names it)."""


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a directory, else ``FileNotFoundError`` saying what was expected there."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: folder {path} does not exist")
    return path


def list_files(folder: Path, suffix: Sequence[str] = IMAGE_EXTENSIONS, recursive: bool = False) -> List[Path]:
    """Sorted files in ``folder`` whose name ends with one of ``suffix`` (case-insensitive)."""
    ends = tuple(s.lower() for s in suffix)
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.name.lower().endswith(ends))


def _key(path: Path, root: Path, suffix: Sequence[str]) -> str:
    rel = path.relative_to(root).as_posix()
    low = rel.lower()
    for s in sorted(suffix, key=len, reverse=True):
        if low.endswith(s.lower()):
            return rel[: len(rel) - len(s)]
    return os.path.splitext(rel)[0]


def _by_key(files: List[Path], root: Path, suffix: Sequence[str], what: str) -> Dict[str, Path]:
    """Files by matching key; two files with one key (``a.png`` and ``a.jpg``) raise ``DatasetError``."""
    out: Dict[str, Path] = {}
    for p in files:
        k = _key(p, root, suffix)
        if k in out:
            raise DatasetError(f"two {what} files share the name {k!r}: {out[k]} and {p}; keep one of them")
        out[k] = p
    return out


def pair_files(
    image_dir: Path,
    mask_dir: Path,
    image_suffix: Sequence[str] = IMAGE_EXTENSIONS,
    mask_suffix: Sequence[str] = (".png",),
    recursive: bool = False,
) -> List[Pair]:
    """Match images to masks by their path relative to the folder with the suffix removed.

    ``image_suffix``/``mask_suffix`` are the name endings stripped before matching (Cityscapes uses
    ``_leftImg8bit.png`` / ``_gtFine_labelIds.png``). An image without a mask or a mask without an
    image raises ``DatasetError`` naming the first few offenders.
    """
    require_dir(image_dir, "image folder")
    require_dir(mask_dir, "mask folder")
    images = _by_key(list_files(image_dir, image_suffix, recursive), image_dir, image_suffix, "image")
    masks = _by_key(list_files(mask_dir, mask_suffix, recursive), mask_dir, mask_suffix, "mask")
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask or no_image:
        parts = []
        if no_mask:
            names = ", ".join(str(images[k]) for k in no_mask[:5])
            parts.append(f"{len(no_mask)} image(s) without a mask in {mask_dir} (e.g. {names})")
        if no_image:
            names = ", ".join(str(masks[k]) for k in no_image[:5])
            parts.append(f"{len(no_image)} mask(s) without an image in {image_dir} (e.g. {names})")
        raise DatasetError("unmatched image/mask pairs: " + "; ".join(parts))
    if not images:
        raise DatasetError(f"no images found in {image_dir} (looked for {', '.join(image_suffix)})")
    return [(str(images[k]), str(masks[k])) for k in sorted(images)]


def pairs_from_list(
    names: Iterable[str], image_dir: Path, mask_dir: Path, image_ext: str, mask_ext: str, list_file: Path
) -> List[Pair]:
    """Pairs for the stems in a split list file; a listed stem with a missing file raises ``DatasetError``."""
    pairs: List[Pair] = []
    for name in names:
        img, msk = image_dir / f"{name}{image_ext}", mask_dir / f"{name}{mask_ext}"
        for path in (img, msk):
            if not path.is_file():
                raise DatasetError(f"{path} listed in {list_file} does not exist")
        pairs.append((str(img), str(msk)))
    if not pairs:
        raise DatasetError(f"split list {list_file} is empty")
    return pairs


def read_list(path: Path) -> List[str]:
    """Non-empty, stripped lines of a split/class list file (``FileNotFoundError`` if absent)."""
    if not path.is_file():
        raise FileNotFoundError(f"list file {path} does not exist")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def _to_uint8(img: Image.Image, path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a decoded image; 16-bit data is scaled (v * 255 / 65535, rounded)."""
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit grey (mode I;16*; older Pillow gives I): PIL's convert("RGB") would clip every value
        # above 255 to white, so scale the full 16-bit range to 8 bits instead
        values = np.asarray(img, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DatasetError(f"image {path} has mode {img.mode} with values outside 0..65535 "
                               f"({values.min()}..{values.max()}); expected 8- or 16-bit data")
        grey = np.rint(values * (255.0 / 65535.0)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "F":
        raise DatasetError(f"image {path} holds floating-point pixels (mode F); expected 8- or 16-bit data "
                           "(save it as an 8- or 16-bit PNG)")
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def load_image(path: str) -> np.ndarray:
    """Decode ``path`` as (H, W, 3) uint8 RGB; ``DatasetError`` naming the file if it is unreadable.

    8-bit images of any mode are converted to RGB. 16-bit grey images are scaled to 8 bits
    (``round(v * 255 / 65535)``, so their full range maps to 0..255 instead of clipping to white);
    16-bit colour PNGs are decoded to 8 bits per channel by Pillow. Floating-point images are refused.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return _to_uint8(img, path)
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def load_mask(path: str) -> np.ndarray:
    """Decode ``path`` as an (H, W) int64 label map; colour masks and unreadable files raise ``DatasetError``."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA", "HSV", "LAB"):
                raise DatasetError(
                    f"mask {path} has mode {img.mode}; expected a single-channel label image "
                    "(mode L, P or I) holding class ids"
                )
            return np.asarray(img, dtype=np.int64).copy()
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read mask {path}: {exc}") from exc


def check_mask_size(image: np.ndarray, mask: np.ndarray, image_path: str, mask_path: str) -> None:
    """``DatasetError`` naming both files when ``mask`` is not the size of ``image`` (it is never resized)."""
    if image.shape[:2] != mask.shape[:2]:
        raise DatasetError(
            f"size mismatch: image {image_path} is {image.shape[1]}x{image.shape[0]} but mask "
            f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} (width x height)"
        )


def check_label_values(mask: np.ndarray, num_classes: int, ignore_index: int, path: str) -> None:
    """``DatasetError`` naming ``path`` if ``mask`` holds a value outside [0, C) and != ``ignore_index``."""
    bad = (mask < 0) | ((mask >= num_classes) & (mask != ignore_index))
    if bad.any():
        values = np.unique(mask[bad])[:10].tolist()
        raise DatasetError(
            f"mask {path} holds label value(s) {values} outside the {num_classes} classes "
            f"(0..{num_classes - 1}) and not the ignore index {ignore_index}"
        )


def build_lut(label_map: Optional[Dict[int, int]], size: int = 256) -> Optional[np.ndarray]:
    """Look-up table raw value -> training id; values not in ``label_map`` map to themselves."""
    if not label_map:
        return None
    lut = np.arange(max(size, max(label_map) + 1), dtype=np.int64)
    for raw, new in label_map.items():
        lut[raw] = new
    return lut


def to_tensor(image: Any, mask: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) image and (H, W) mask arrays -> float32 (3, H, W) and int64 (H, W) tensors.

    A uint8 image is scaled to [0, 1]; a float image (already normalised) is kept as is.
    Tensors pass through unchanged (apart from dtype).
    """
    if isinstance(image, np.ndarray):
        scale = 1.0 / 255.0 if image.dtype == np.uint8 else 1.0
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() * scale
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask)).long()
    return image.float(), mask.long()


class SegmentationDataset(Dataset):
    """Base class: ``files`` pairs + ``classes``/``palette``/``ignore_index`` + label mapping + checks.

    Subclasses set the class attributes ``CLASSES`` and ``PALETTE`` (and ``LABEL_MAP`` for a raw value ->
    training id mapping) and call ``super().__init__(files, transform=...)``. ``reduce_zero_label``
    maps 0 to the ignore index and every other value v to v - 1 (ADE20K convention).
    ``__getitem__`` returns (image float32 (3, H, W), mask int64 (H, W)); without a transform the image
    is in [0, 1]. A mask value that is neither a class id nor the ignore index raises ``DatasetError``
    naming the mask file and the offending values.
    """

    CLASSES: Sequence[str] = ()
    PALETTE: Sequence[Color] = ()
    LABEL_MAP: Optional[Dict[int, int]] = None

    def __init__(
        self,
        files: List[Pair],
        transform: Optional[Transform] = None,
        *,
        classes: Optional[Sequence[str]] = None,
        palette: Optional[Sequence[Color]] = None,
        ignore_index: int = 255,
        label_map: Optional[Dict[int, int]] = None,
        reduce_zero_label: bool = False,
    ) -> None:
        self.files: Optional[List[Pair]] = list(files)
        self.transform = transform
        self.classes: List[str] = list(classes if classes is not None else self.CLASSES)
        self.num_classes: int = len(self.classes)
        pal = palette if palette is not None else self.PALETTE
        if len(pal) < self.num_classes:
            from segattn.data.palette import bit_palette

            pal = list(pal) + bit_palette(self.num_classes + 1)[len(pal) + 1 :]
        self.palette: List[Color] = [tuple(int(v) for v in c) for c in pal[: self.num_classes]]  # type: ignore[misc]
        self.ignore_index = int(ignore_index)
        self.reduce_zero_label = bool(reduce_zero_label)
        self._lut = build_lut(label_map if label_map is not None else self.LABEL_MAP)

    @classmethod
    def label_map_for(cls, dataset_kwargs: Dict[str, Any]) -> Optional[Dict[int, int]]:
        """The raw value -> training id map this reader uses with ``dataset_kwargs`` (default ``LABEL_MAP``)."""
        return dataset_kwargs.get("label_map", cls.LABEL_MAP)

    @classmethod
    def mask_reader(cls, **dataset_kwargs: Any) -> SegmentationDataset:
        """A reader without files whose :meth:`map_labels` treats raw masks exactly as this dataset does
        when built with ``dataset_kwargs`` (CamVid's void 11 -> ignore, ADE20K's reduce-zero-label,
        Cityscapes' label ids -> train ids): masks read outside a dataset (``segattn viz --labels``)."""
        import inspect

        params = inspect.signature(cls.__init__).parameters

        def arg(name: str, default: Any) -> Any:
            if name in dataset_kwargs:
                return dataset_kwargs[name]
            p = params.get(name)
            return default if p is None or p.default is inspect.Parameter.empty else p.default

        reader = cls.__new__(cls)
        SegmentationDataset.__init__(reader, [], classes=list(cls.CLASSES), palette=list(cls.PALETTE),
                                     ignore_index=int(arg("ignore_index", 255)),
                                     label_map=cls.label_map_for(dataset_kwargs) or {},
                                     reduce_zero_label=bool(arg("reduce_zero_label", False)))
        return reader

    def __len__(self) -> int:
        return len(self.files or [])

    def map_labels(self, raw: np.ndarray) -> np.ndarray:
        """Raw mask values -> training ids (label map, then reduce-zero-label)."""
        mask = raw.astype(np.int64)
        if self._lut is not None:
            inside = (mask >= 0) & (mask < len(self._lut))
            mask = np.where(inside, self._lut[np.clip(mask, 0, len(self._lut) - 1)], mask)
        if self.reduce_zero_label:
            mask = np.where(mask == 0, self.ignore_index, np.where(mask == self.ignore_index, mask, mask - 1))
        return mask

    def check_labels(self, mask: np.ndarray, path: str) -> None:
        """``DatasetError`` naming ``path`` if ``mask`` holds a value outside [0, C) and != ignore_index."""
        check_label_values(mask, self.num_classes, self.ignore_index, path)

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """Decoded, mapped and checked (image uint8 (H, W, 3), mask int64 (H, W)) for item ``index``."""
        assert self.files is not None
        img_path, mask_path = self.files[index]
        image = load_image(img_path)
        mask = self.map_labels(load_mask(mask_path))
        check_mask_size(image, mask, img_path, mask_path)
        self.check_labels(mask, mask_path)
        return image, mask

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        image, mask = self.load(index % len(self))
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return to_tensor(image, mask)

    def verify(self) -> None:
        """Read every pair once (raises on the first bad file); for checking a dataset after download."""
        from segattn.progress import progress

        for i in progress(range(len(self)), desc=f"verify {type(self).__name__}", unit="pair"):
            self.load(i)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(items={len(self)}, classes={self.num_classes}, ignore_index={self.ignore_index})"
