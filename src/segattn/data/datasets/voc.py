"""PASCAL VOC 2012 segmentation, with the SBD-augmented "trainaug" split (10,582 images).

SBD (Hariharan et al., ICCV 2011) ships its masks as MATLAB v5 ``.mat`` files; ``read_sbd_mat`` is a
small numpy-only reader for them (no scipy), and ``prepare_trainaug`` writes the usual
``SegmentationClassAug/`` PNG folder and ``ImageSets/Segmentation/trainaug.txt`` list.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
from PIL import Image

from segattn.data.datasets.base import (
    DatasetError,
    SegmentationDataset,
    Transform,
    load_mask,
    pairs_from_list,
    read_list,
    require_dir,
)
from segattn.data.palette import bit_palette
from segattn.registry import DATASETS

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


def find_voc_root(root: Union[str, Path]) -> Path:
    """The VOC2012 folder (holding JPEGImages/) at ``root``, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``."""
    root = Path(root)
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise FileNotFoundError(
        f"PASCAL VOC 2012 not found under {root}: expected JPEGImages/ in {root}, {root / 'VOC2012'} "
        f"or {root / 'VOCdevkit' / 'VOC2012'} (segattn data download voc --root {root})"
    )


@DATASETS.register("voc", paper="Everingham et al., IJCV 2010; SBD: Hariharan et al., ICCV 2011", classes=21,
                   folder="voc")  # fmt: skip
class VOC(SegmentationDataset):
    """PASCAL VOC 2012 segmentation (21 classes incl. background; 255 = object boundary, ignored).

    Splits: train / val / trainval from ``ImageSets/Segmentation/<split>.txt`` with masks in
    ``SegmentationClass/``; "trainaug" (the 10,582-image SBD-augmented training set) from
    ``ImageSets/Segmentation/trainaug.txt`` (or mmseg's ``aug.txt``) with masks in
    ``SegmentationClassAug/``; create both once with ``prepare_trainaug(voc_root, sbd_root)``.
    """

    CLASSES = VOC_CLASSES
    PALETTE = tuple(bit_palette(21))
    SPLITS = ("train", "val", "trainval", "trainaug")

    def __init__(
        self, root: Union[str, Path], split: str = "train", transform: Optional[Transform] = None
    ) -> None:
        if split not in self.SPLITS:
            raise ValueError(f"VOC split must be one of {self.SPLITS}, got {split!r}")
        base = find_voc_root(root)
        lists = base / "ImageSets" / "Segmentation"
        if split == "trainaug":
            mask_dir = base / "SegmentationClassAug"
            list_file = lists / "trainaug.txt"
            if not list_file.is_file() and (lists / "aug.txt").is_file():
                list_file = lists / "aug.txt"
            if not mask_dir.is_dir() or not list_file.is_file():
                raise FileNotFoundError(
                    f"VOC trainaug needs {mask_dir} and {list_file}; create them from SBD with "
                    "segattn.data.datasets.voc.prepare_trainaug(voc_root, sbd_root) "
                    "(segattn data download sbd --root SBD_ROOT first)"
                )
        else:
            mask_dir, list_file = base / "SegmentationClass", lists / f"{split}.txt"
        require_dir(mask_dir, "VOC mask folder")
        files = pairs_from_list(
            read_list(list_file), base / "JPEGImages", mask_dir, ".jpg", ".png", list_file
        )
        super().__init__(files, transform)
        self.root, self.split = base, split


# ---------------------------------------------------------------------------------------------
# MATLAB v5 reader (just enough for SBD's cls/*.mat: a struct GTcls with a uint8 Segmentation field)

_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MX_STRUCT = 2
_MX_NUMERIC = set(range(6, 16))


def _elements(buf: bytes, pos: int, end: int, order: str) -> List[Tuple[int, bytes]]:
    """(type, payload) of the data elements in ``buf[pos:end]``, honouring the small-element format."""
    out = []
    while pos + 8 <= end:
        mtype, nbytes = struct.unpack_from(order + "II", buf, pos)
        if mtype >> 16:  # small data element: 2-byte size, 2-byte type, 4 bytes of data
            nbytes, mtype = mtype >> 16, mtype & 0xFFFF
            out.append((mtype, buf[pos + 4 : pos + 4 + nbytes]))
            pos += 8
        else:
            out.append((mtype, buf[pos + 8 : pos + 8 + nbytes]))
            pos += 8 + nbytes + (-nbytes % 8 if mtype != _MI_COMPRESSED else 0)
    return out


def _matrix(payload: bytes, order: str) -> Any:
    """Decode a miMATRIX payload: numeric arrays and structs; other classes (cell, sparse, char) -> None."""
    if not payload:
        return None
    parts = _elements(payload, 0, len(payload), order)
    flags = np.frombuffer(parts[0][1], dtype=order + "u4")
    mx_class = int(flags[0]) & 0xFF
    dims = tuple(int(d) for d in np.frombuffer(parts[1][1], dtype=order + "i4"))
    if mx_class in _MX_NUMERIC:
        mtype, data = parts[3]
        return np.frombuffer(data, dtype=order + _MI_DTYPES[mtype]).reshape(dims, order="F")
    if mx_class == _MX_STRUCT:
        name_len = int(np.frombuffer(parts[3][1], dtype=order + "i4")[0])
        raw = parts[4][1]
        names = [raw[i : i + name_len].split(b"\0")[0].decode() for i in range(0, len(raw), name_len)]
        fields = parts[5:]
        return {n: _matrix(fields[i][1], order) for i, n in enumerate(names) if i < len(fields)}
    return None


def read_mat(path: Union[str, Path]) -> Dict[str, Any]:
    """Top-level variables of a MATLAB v5 file: numeric arrays, structs (as dicts); others -> None."""
    buf = Path(path).read_bytes()
    if len(buf) < 128 or buf[126:128] not in (b"IM", b"MI"):
        raise DatasetError(f"{path} is not a MATLAB v5 .mat file")
    order = "<" if buf[126:128] == b"IM" else ">"
    result: Dict[str, Any] = {}
    elements = _elements(buf, 128, len(buf), order)
    while elements:
        mtype, payload = elements.pop(0)
        if mtype == _MI_COMPRESSED:
            data = zlib.decompress(payload)
            elements = _elements(data, 0, len(data), order) + elements
        elif mtype == _MI_MATRIX and payload:
            parts = _elements(payload, 0, len(payload), order)
            name = parts[2][1].decode(errors="replace")
            result[name] = _matrix(payload, order)
    return result


def read_sbd_mat(path: Union[str, Path]) -> np.ndarray:
    """The (H, W) class map ``GTcls.Segmentation`` of an SBD ``cls/*.mat`` file, as int64."""
    try:
        seg = read_mat(path)["GTcls"]["Segmentation"]
    except (KeyError, TypeError, IndexError, struct.error, zlib.error, ValueError) as exc:
        raise DatasetError(f"cannot read SBD annotation {path}: {exc!r}") from exc
    return np.asarray(seg, dtype=np.int64)


def prepare_trainaug(voc_root: Union[str, Path], sbd_root: Union[str, Path]) -> Path:
    """Write ``SegmentationClassAug/*.png`` and ``ImageSets/Segmentation/trainaug.txt`` into VOC2012.

    trainaug = (SBD train + SBD val + VOC train) - VOC val. Masks come from VOC's own
    ``SegmentationClass`` where it has one (finer, with 255 boundaries), else from SBD's ``cls/*.mat``.
    ``sbd_root`` is the folder with ``cls/``, ``train.txt`` and ``val.txt`` (or a parent holding
    ``benchmark_RELEASE/dataset``). Returns the list file.
    """
    voc = find_voc_root(voc_root)
    sbd = Path(sbd_root)
    if (sbd / "benchmark_RELEASE" / "dataset").is_dir():
        sbd = sbd / "benchmark_RELEASE" / "dataset"
    require_dir(sbd / "cls", "SBD class annotations")
    lists = voc / "ImageSets" / "Segmentation"
    voc_val = set(read_list(lists / "val.txt"))
    names = (
        set(read_list(sbd / "train.txt"))
        | set(read_list(sbd / "val.txt"))
        | set(read_list(lists / "train.txt"))
    )
    names = sorted(names - voc_val)
    out = voc / "SegmentationClassAug"
    out.mkdir(exist_ok=True)
    for name in names:
        own = voc / "SegmentationClass" / f"{name}.png"
        mask = load_mask(str(own)) if own.is_file() else read_sbd_mat(sbd / "cls" / f"{name}.mat")
        tmp = out / f".{name}.png.tmp"
        Image.fromarray(mask.astype(np.uint8), mode="L").save(tmp, format="PNG")
        tmp.replace(out / f"{name}.png")
    list_file = lists / "trainaug.txt"
    list_file.write_text("\n".join(names) + "\n")
    return list_file
