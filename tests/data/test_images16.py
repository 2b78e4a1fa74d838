"""16-bit images: read at their full range (scaled to 8 bits), never clipped to white (issue 12).

Covers the decoder every path shares (``load_image``), a dataset item (training and validation read
it), and ``segattn predict``'s input (through the same decoder).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segattn.data import DatasetError
from segattn.data.datasets.base import load_image
from segattn.data.datasets.folder import FolderDataset
from tests.data.fakes import write_mask, write_png16

RAMP = (np.arange(6 * 8).reshape(6, 8) * 1365).astype(np.uint16)  # 0 .. 64155 over the 16-bit range


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    path = write_png16(tmp_path / "g.png", RAMP)
    assert Image.open(path).mode.startswith("I;16")
    rgb = load_image(str(path))
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 8, 3)
    expected = np.rint(RAMP * 255.0 / 65535.0).astype(np.uint8)
    np.testing.assert_array_equal(rgb[..., 0], expected)
    np.testing.assert_array_equal(rgb[..., 1], rgb[..., 2])
    assert (rgb == 255).mean() < 0.05  # before the fix: almost every pixel was 255
    colour = np.stack([RAMP, 65535 - RAMP, np.full_like(RAMP, 30000)], -1)  # 16-bit RGB: Pillow's 8-bit decode
    rgb = load_image(str(write_png16(tmp_path / "c.png", colour)))
    assert np.abs(rgb.astype(int) - np.rint(colour / 257.0)).max() <= 1
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)  # 8-bit images unchanged
    Image.fromarray(arr).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(str(tmp_path / "a.png")), arr)


def test_float_images_refused_with_the_file_named(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DatasetError, match=r"f\.tif holds floating-point pixels"):
        load_image(str(tmp_path / "f.tif"))


def test_dataset_item_from_16bit_image(tmp_path):
    write_png16(tmp_path / "images" / "a.png", RAMP)
    write_mask(tmp_path / "masks" / "a.png", [0, 1])
    (tmp_path / "classes.txt").write_text("a\nb\n")
    image, _ = FolderDataset(tmp_path)[0]  # no transform: [0, 1] floats
    expected = np.rint(RAMP * 255.0 / 65535.0) / 255.0
    np.testing.assert_allclose(image[0].numpy(), expected, atol=1e-6)
    assert float(image.mean()) < 0.6


def test_two_images_sharing_a_stem_are_an_error(tmp_path):
    from tests.data.fakes import write_rgb

    write_rgb(tmp_path / "images" / "a.png")
    write_rgb(tmp_path / "images" / "a.jpg", fmt="JPEG")
    write_mask(tmp_path / "masks" / "a.png", [0])
    (tmp_path / "classes.txt").write_text("a\n")
    with pytest.raises(DatasetError, match="two image files share the name 'a'"):
        FolderDataset(tmp_path)
