"""CamVid reader (SegNet layout) and the shared error handling of file-based datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from segattn.data import DatasetError, build_dataset, list_datasets
from segattn.data.datasets.camvid import CamVid
from segattn.data.transforms import build_transforms
from tests.data.fakes import corrupt, write_mask, write_pair, write_rgb


def make_camvid(root: Path, n: int = 3, split: str = "train") -> Path:
    for i in range(n):
        write_pair(root / split / f"f{i}.png", root / f"{split}annot" / f"f{i}.png", [0, 3, 10, 11], seed=i)
    return root


def test_registered():
    assert {"camvid", "synthetic"} <= set(list_datasets())


def test_reads_items_and_maps_void_to_ignore(tmp_path):
    ds = build_dataset("camvid", root=str(make_camvid(tmp_path)), split="train")
    assert len(ds) == 3 and ds.num_classes == 11 == len(ds.palette) and ds.classes[0] == "sky"
    assert ds.ignore_index == 255 and ds.files[0][0].endswith("train/f0.png")
    image, mask = ds[1]
    assert image.shape == (3, 6, 8) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert mask.dtype == torch.int64 and sorted(mask.unique().tolist()) == [0, 3, 10, 255]


def test_with_transform(tmp_path):
    ds = CamVid(make_camvid(tmp_path), "train", transform=build_transforms(True, crop_size=(4, 4)))
    image, mask = ds[0]
    assert image.shape == (3, 4, 4) and mask.shape == (4, 4)


def test_missing_root_and_split_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CamVid(tmp_path / "nowhere")
    make_camvid(tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match="val"):
        CamVid(tmp_path, "val")
    with pytest.raises(ValueError, match="split"):
        CamVid(tmp_path, "bogus")


def test_unmatched_pairs_named(tmp_path):
    make_camvid(tmp_path)
    write_rgb(tmp_path / "train" / "lonely.png")
    with pytest.raises(DatasetError, match="lonely.png"):
        CamVid(tmp_path)
    (tmp_path / "train" / "lonely.png").unlink()
    write_mask(tmp_path / "trainannot" / "orphan.png", [0])
    with pytest.raises(DatasetError, match="orphan.png"):
        CamVid(tmp_path)


def test_corrupt_image_and_mask_named(tmp_path):
    make_camvid(tmp_path)
    corrupt(tmp_path / "train" / "f1.png")
    ds = CamVid(tmp_path)
    ds[0]
    with pytest.raises(DatasetError, match=r"cannot read image .*f1\.png"):
        ds[1]
    corrupt(tmp_path / "trainannot" / "f2.png")
    with pytest.raises(DatasetError, match=r"cannot read mask .*f2\.png"):
        ds[2]
    with pytest.raises(DatasetError, match="f1.png"):
        ds.verify()


def test_label_out_of_range_named(tmp_path):
    make_camvid(tmp_path)
    write_mask(tmp_path / "trainannot" / "f2.png", [0, 12, 40])
    ds = CamVid(tmp_path)
    with pytest.raises(DatasetError, match=r"f2\.png.*\[12, 40\]"):
        ds[2]


def test_colour_mask_and_size_mismatch_named(tmp_path):
    make_camvid(tmp_path)
    write_rgb(tmp_path / "trainannot" / "f0.png")
    write_mask(tmp_path / "trainannot" / "f1.png", [0], size=(5, 8))
    ds = CamVid(tmp_path)
    with pytest.raises(DatasetError, match=r"f0\.png has mode RGB"):
        ds[0]
    with pytest.raises(DatasetError, match=r"size mismatch.*f1\.png"):
        ds[1]


def test_index_out_of_range(tmp_path):
    ds = CamVid(make_camvid(tmp_path))
    with pytest.raises(IndexError):
        ds[3]
    assert torch.equal(ds[-1][1], ds[2][1])


def test_default_root_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGATTN_DATA", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="SEGATTN_DATA"):
        build_dataset("camvid")
    make_camvid(tmp_path / "data" / "camvid")
    assert len(build_dataset("camvid")) == 3


SHARED = Path(os.environ.get("SEGATTN_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data") / "camvid"


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared CamVid copy not present")
def test_shared_camvid_layout():
    train, val = CamVid(SHARED, "train"), CamVid(SHARED, "val")
    assert (len(train), len(val)) == (367, 101)
    image, mask = val[0]
    assert image.shape == (3, 360, 480)
    assert set(np.unique(mask.numpy())) <= set(range(11)) | {255}
