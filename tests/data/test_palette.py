"""colorize / overlay / bit_palette, and that datasets survive pickling and batching."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from segattn.data import colorize, overlay
from segattn.data.palette import bit_palette
from segattn.data.synthetic import SyntheticContext
from segattn.data.transforms import build_transforms


def test_bit_palette_matches_voc_colours():
    pal = bit_palette(21)
    assert pal[0] == (0, 0, 0) and pal[1] == (128, 0, 0) and pal[2] == (0, 128, 0)
    assert pal[15] == (192, 128, 128) and pal[20] == (0, 64, 128)
    assert len(set(bit_palette(256))) == 256


def test_colorize_numpy_and_tensor_with_ignore():
    palette = [(10, 20, 30), (40, 50, 60)]
    mask = np.array([[0, 1], [255, -1]])
    rgb = colorize(mask, palette)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[0, 1].tolist() == [40, 50, 60]
    assert rgb[1].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert np.array_equal(colorize(torch.from_numpy(mask), palette, ignore_color=(1, 2, 3))[1, 0], [1, 2, 3])
    with pytest.raises(ValueError):
        colorize(np.zeros((1, 2, 2), np.int64), palette)
    with pytest.raises(TypeError):
        colorize(np.zeros((2, 2)), palette)


def test_overlay_blends_only_valid_pixels():
    image = np.full((1, 2, 3), 100, np.uint8)
    out = overlay(image, np.array([[0, 255]]), [(200, 0, 0)], alpha=0.5)
    assert out[0, 0].tolist() == [150, 50, 50] and out[0, 1].tolist() == [100, 100, 100]


def test_dataset_pickles_and_batches():
    ds = SyntheticContext(6, transform=build_transforms(True, crop_size=32))
    clone = pickle.loads(pickle.dumps(ds))
    torch.manual_seed(0)
    a = ds[2]
    torch.manual_seed(0)
    b = clone[2]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    images, masks = next(iter(DataLoader(ds, batch_size=3)))
    assert images.shape == (3, 3, 32, 32) and masks.shape == (3, 32, 32) and masks.dtype == torch.int64
