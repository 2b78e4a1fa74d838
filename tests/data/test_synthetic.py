"""SyntheticContext: determinism, label rule, and that labels need context beyond a local patch."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from segattn.data import build_dataset
from segattn.data.synthetic import CUE_COLORS, SyntheticContext
from segattn.data.transforms import build_transforms


def test_shapes_and_metadata():
    ds = build_dataset("synthetic", num_samples=8)
    assert isinstance(ds, SyntheticContext) and len(ds) == 8 and ds.files is None
    assert ds.num_classes == 5 == len(ds.classes) == len(ds.palette) and ds.ignore_index == 255
    image, mask = ds[3]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and mask.dtype == torch.int64
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    assert set(mask.unique().tolist()) <= set(range(5))


def test_deterministic_by_seed_and_index():
    a, b = SyntheticContext(10, seed=3), SyntheticContext(10, seed=3)
    for i in (0, 7):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    assert not torch.equal(a[0][0], a[1][0])
    assert not torch.equal(a[0][0], SyntheticContext(10, seed=4)[0][0])
    assert not torch.equal(a[0][0], SyntheticContext(10, seed=3, split="val")[0][0])
    # independent of access order
    c = SyntheticContext(10, seed=3)
    _ = c[9]
    assert torch.equal(c[7][0], a[7][0])


def test_label_is_the_colour_of_the_border_marker():
    ds = SyntheticContext(30, seed=1)
    seen = set()
    for i in range(30):
        image, mask = ds.generate(i)
        fg = np.unique(mask[mask > 0])
        assert len(fg) == 1
        k = int(fg[0]) - 1
        seen.add(k)
        marker = np.all(image == np.asarray(CUE_COLORS[k], np.uint8), axis=-1)
        assert marker.sum() == ds.cue_size**2
        rows, cols = np.nonzero(marker)
        assert rows.min() == 0 or cols.min() == 0 or rows.max() == 63 or cols.max() == 63
        for j, other in enumerate(CUE_COLORS[:4]):
            if j != k:
                assert not np.all(image == np.asarray(other, np.uint8), axis=-1).any()
    assert seen == {0, 1, 2, 3}


def test_label_not_a_function_of_the_local_patch():
    """Find two pixels whose 15x15 neighbourhoods are identical but whose labels differ."""
    ds = SyntheticContext(40, seed=0)
    items = [ds.generate(i) for i in range(40)]
    r = 7
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            (img_a, m_a), (img_b, m_b) = items[i], items[j]
            if m_a.max() == m_b.max():
                continue
            both = (m_a > 0) & (m_b > 0)
            for y, x in zip(*np.nonzero(both[r:-r, r:-r])):
                y, x = y + r, x + r
                win = (slice(y - r, y + r + 1), slice(x - r, x + r + 1))
                if np.array_equal(img_a[win], img_b[win]):
                    assert m_a[y, x] != m_b[y, x]
                    return
    pytest.fail("no pair of identical 15x15 patches with different labels found")


def test_fast_and_transformable():
    ds = SyntheticContext(200, transform=build_transforms(True, crop_size=48, scale_range=(0.75, 1.25)))
    start = time.perf_counter()
    for i in range(200):
        image, mask = ds[i]
    assert image.shape == (3, 48, 48) and mask.shape == (48, 48)
    assert time.perf_counter() - start < 5.0


def test_bad_arguments():
    with pytest.raises(ValueError):
        SyntheticContext(4, size=(16, 16))
    with pytest.raises(ValueError):
        SyntheticContext(4, num_classes=20)
    with pytest.raises(IndexError):
        SyntheticContext(4)[4]
