"""VOC (+ SBD trainaug), Cityscapes, ADE20K and folder readers on tiny fake trees."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from segattn.data import DatasetError, build_dataset
from segattn.data.datasets.ade20k import ADE20K
from segattn.data.datasets.cityscapes import LABEL_TO_TRAIN_ID, Cityscapes
from segattn.data.datasets.folder import FolderDataset, read_classes
from segattn.data.datasets.voc import VOC, prepare_trainaug, read_sbd_mat
from tests.data.fakes import corrupt, write_mask, write_pair, write_rgb

# ---------------------------------------------------------------- a tiny MATLAB v5 writer for SBD


def _el(mtype: int, data: bytes) -> bytes:
    return struct.pack("<II", mtype, len(data)) + data + b"\0" * (-len(data) % 8)


def _header(mx_class: int, dims: tuple, name: str = "") -> bytes:
    return (
        _el(6, struct.pack("<II", mx_class, 0))
        + _el(5, struct.pack(f"<{len(dims)}i", *dims))
        + _el(1, name.encode())
    )


def _numeric(arr: np.ndarray, name: str = "") -> bytes:
    codes = {np.dtype("uint8"): (9, 2), np.dtype("float64"): (6, 9)}
    mx, mi = codes[arr.dtype]
    return _el(14, _header(mx, arr.shape, name) + _el(mi, arr.tobytes(order="F")))


def write_sbd_mat(path: Path, seg: np.ndarray, compress: bool = True) -> None:
    cell = _el(14, _header(1, (1, 1)) + _numeric(np.ones((2, 3))))  # a cell to skip
    fields = ["Boundaries", "Segmentation", "CategoriesPresent"]
    names = b"".join(f.encode().ljust(32, b"\0") for f in fields)
    body = (
        _header(2, (1, 1), "GTcls")
        + struct.pack("<HHI", 5, 4, 32)  # small element: field-name length 32
        + _el(1, names)
        + cell
        + _numeric(seg.astype(np.uint8))
        + _numeric(np.unique(seg).astype(np.uint8)[None])
    )
    element = _el(14, body)
    if compress:
        z = zlib.compress(element)
        element = struct.pack("<II", 15, len(z)) + z
    header = b"MATLAB 5.0 MAT-file, fake".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + element)


@pytest.mark.parametrize("compress", [True, False])
def test_read_sbd_mat(tmp_path, compress):
    seg = np.arange(35).reshape(5, 7) % 21
    write_sbd_mat(tmp_path / "a.mat", seg, compress)
    got = read_sbd_mat(tmp_path / "a.mat")
    assert got.dtype == np.int64 and np.array_equal(got, seg)
    (tmp_path / "b.mat").write_bytes(b"nonsense")
    with pytest.raises(DatasetError, match="b.mat"):
        read_sbd_mat(tmp_path / "b.mat")


# ---------------------------------------------------------------- VOC


def make_voc(root: Path, train: List[str], val: List[str]) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for i, name in enumerate(train + val):
        write_pair(
            voc / "JPEGImages" / f"{name}.jpg",
            voc / "SegmentationClass" / f"{name}.png",
            [0, 5, 20, 255],
            seed=i,
        )
    (lists / "train.txt").write_text("\n".join(train) + "\n")
    (lists / "val.txt").write_text("\n".join(val) + "\n")
    (lists / "trainval.txt").write_text("\n".join(train + val) + "\n")
    return voc


def test_voc_splits(tmp_path):
    make_voc(tmp_path, ["a", "b"], ["c"])
    ds = build_dataset("voc", root=str(tmp_path), split="train")
    assert len(ds) == 2 and ds.num_classes == 21 and ds.palette[1] == (128, 0, 0)
    image, mask = ds[0]
    assert image.shape == (3, 6, 8) and sorted(mask.unique().tolist()) == [0, 5, 20, 255]
    assert len(VOC(tmp_path / "VOCdevkit" / "VOC2012", "trainval")) == 3
    with pytest.raises(FileNotFoundError, match="trainaug"):
        VOC(tmp_path, "trainaug")
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        VOC(tmp_path / "nothing")


def test_voc_listed_file_missing_named(tmp_path):
    voc = make_voc(tmp_path, ["a", "b"], ["c"])
    (voc / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(DatasetError, match=r"b\.jpg listed in .*train\.txt"):
        VOC(tmp_path)


def test_voc_trainaug_from_sbd(tmp_path):
    voc = make_voc(tmp_path / "voc", ["a", "b"], ["c"])
    sbd = tmp_path / "sbd" / "benchmark_RELEASE" / "dataset"
    for i, name in enumerate(["c", "d", "e"]):  # "c" is VOC val: must be excluded
        write_sbd_mat(sbd / "cls" / f"{name}.mat", np.full((6, 8), i + 1))
        write_rgb(voc / "JPEGImages" / f"{name}.jpg", fmt="JPEG")
    (sbd / "train.txt").write_text("c\nd\n")
    (sbd / "val.txt").write_text("e\n")
    list_file = prepare_trainaug(tmp_path / "voc", tmp_path / "sbd")
    assert list_file.read_text().split() == ["a", "b", "d", "e"]
    ds = VOC(tmp_path / "voc", "trainaug")
    assert len(ds) == 4
    assert ds[2][1].unique().tolist() == [2] and ds[3][1].unique().tolist() == [3]  # from SBD .mat
    assert sorted(ds[0][1].unique().tolist()) == [0, 5, 20, 255]  # VOC's own mask kept


# ---------------------------------------------------------------- Cityscapes


def make_cityscapes(root: Path, label_values: List[int]) -> Path:
    for split, cities in (("train", ["aachen", "bonn"]), ("val", ["lindau"])):
        for c, city in enumerate(cities):
            stem = f"{city}_000000_00001{c}"
            write_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", seed=c)
            write_mask(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_values)
            write_mask(root / "gtFine" / split / city / f"{stem}_gtFine_color.png", [1])  # distractor
    return root


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    make_cityscapes(tmp_path, [0, 7, 8, 26, 33, 9])
    ds = build_dataset("cityscapes", root=str(tmp_path), split="train")
    assert len(ds) == 2 and ds.num_classes == 19 and ds.classes[13] == "car"
    assert ds.files[0][1].endswith("aachen_000000_000010_gtFine_labelIds.png")
    assert sorted(ds[0][1].unique().tolist()) == [0, 1, 13, 18, 255]
    assert len(Cityscapes(tmp_path, "val")) == 1
    assert sorted(v for v in LABEL_TO_TRAIN_ID.values() if v != 255) == list(range(19))


def test_cityscapes_errors(tmp_path):
    make_cityscapes(tmp_path, [7, 40])
    with pytest.raises(DatasetError, match=r"aachen.*labelIds\.png.*\[40\]"):
        Cityscapes(tmp_path)[0]
    (tmp_path / "gtFine" / "val" / "lindau" / "lindau_000000_000010_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetError, match="lindau_000000_000010_leftImg8bit.png"):
        Cityscapes(tmp_path, "val")
    with pytest.raises(FileNotFoundError, match="test"):
        Cityscapes(tmp_path, "test")


# ---------------------------------------------------------------- ADE20K


def make_ade(root: Path, values: List[int]) -> Path:
    base = root / "ADEChallengeData2016"
    for split in ("training", "validation"):
        for i in range(2):
            write_pair(
                base / "images" / split / f"ADE_{split}_{i}.jpg",
                base / "annotations" / split / f"ADE_{split}_{i}.png",
                values,
                seed=i,
            )
    return root


def test_ade20k_reduce_zero_label(tmp_path):
    make_ade(tmp_path, [0, 1, 150, 42])
    ds = build_dataset("ade20k", root=str(tmp_path), split="val")
    assert len(ds) == 2 and ds.num_classes == 150 == len(ds.palette) and ds.classes[0] == "wall"
    assert sorted(ds[0][1].unique().tolist()) == [0, 41, 149, 255]
    raw = ADE20K(tmp_path / "ADEChallengeData2016", "train", reduce_zero_label=False)
    assert raw.num_classes == 151 and sorted(raw[1][1].unique().tolist()) == [0, 1, 42, 150]


def test_ade20k_errors(tmp_path):
    make_ade(tmp_path, [0, 151])
    with pytest.raises(DatasetError, match=r"ADE_training_0\.png.*\[150\]"):
        ADE20K(tmp_path)[0]
    corrupt(tmp_path / "ADEChallengeData2016" / "images" / "validation" / "ADE_validation_1.jpg")
    with pytest.raises(DatasetError, match="cannot read image.*ADE_validation_1.jpg"):
        ADE20K(tmp_path, "val")[1]


# ---------------------------------------------------------------- folder


def make_folder(
    root: Path, stems: Dict[str, List[int]], classes: str = "sky 0 0 255\nroad 128 64 128\n"
) -> Path:
    for i, (stem, values) in enumerate(stems.items()):
        write_pair(root / "images" / f"{stem}.jpg", root / "masks" / f"{stem}.png", values, seed=i)
    (root / "classes.txt").write_text(classes)
    return root


def test_folder_reads_classes_palette_and_splits(tmp_path):
    make_folder(tmp_path, {"x": [0, 1], "y": [1, 255], "z": [0]})
    ds = FolderDataset(tmp_path)
    assert len(ds) == 3 and ds.classes == ["sky", "road"] and ds.palette == [(0, 0, 255), (128, 64, 128)]
    assert sorted(ds[1][1].unique().tolist()) == [1, 255]
    (tmp_path / "val.txt").write_text("z\nx\n")
    val = build_dataset("folder", root=str(tmp_path), split="val")
    assert [Path(i).stem for i, _ in val.files] == ["z", "x"]
    with pytest.raises(FileNotFoundError, match="split=None"):
        build_dataset("folder", root=str(tmp_path), split="train")
    (tmp_path / "test.txt").write_text("nope\n")
    with pytest.raises(DatasetError, match="nope"):
        FolderDataset(tmp_path, "test")


def test_folder_split_subfolders(tmp_path):
    make_folder(tmp_path, {})
    write_pair(tmp_path / "images" / "train" / "a.png", tmp_path / "masks" / "train" / "a.png", [0])
    assert len(FolderDataset(tmp_path, "train")) == 1


def test_folder_errors(tmp_path):
    make_folder(tmp_path, {"x": [0, 1], "y": [0, 2]})
    ds = FolderDataset(tmp_path)
    with pytest.raises(DatasetError, match=r"y\.png holds label value\(s\) \[2\]"):
        ds[1]
    with pytest.raises(FileNotFoundError, match="classes2.txt"):
        FolderDataset(tmp_path, classes_file="classes2.txt")
    write_rgb(tmp_path / "images" / "w.png")
    with pytest.raises(DatasetError, match="w.png"):
        FolderDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="labels does not exist"):
        FolderDataset(tmp_path, mask_dir="labels")


def test_read_classes_without_colours(tmp_path):
    (tmp_path / "c.txt").write_text("# comment\ntraffic light\nsky\n\n")
    names, palette = read_classes(tmp_path / "c.txt")
    assert names == ["traffic light", "sky"] and palette is None
    make_folder(tmp_path / "ds", {"x": [0, 1]}, classes="a\nb\nc\n")
    ds = FolderDataset(tmp_path / "ds")
    assert ds.num_classes == 3 and len(set(ds.palette)) == 3  # generated palette when the file has none
