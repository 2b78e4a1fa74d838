"""Joint transforms: shapes, ignore padding, cat-max-ratio rule, nearest masks, image/mask alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segattn.data import transforms as T


def coord_pair(h: int = 40, w: int = 56):
    """Image whose pixels encode their own (row, col); mask holds the same code as one integer."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([yy, xx, np.zeros_like(yy)], axis=-1).astype(np.uint8)
    mask = (yy * 256 + xx).astype(np.int64)
    return image, mask


def mask_from_image(image: np.ndarray) -> np.ndarray:
    return image[..., 0].astype(np.int64) * 256 + image[..., 1].astype(np.int64)


def test_nearest_resize_copies_values_only():
    mask = np.random.randint(0, 5, size=(13, 17)).astype(np.int64)
    for size in [(7, 9), (26, 34), (40, 11)]:
        out = T.resize_nearest(mask, size)
        assert out.shape == size and out.dtype == np.int64
        assert set(np.unique(out)) <= set(np.unique(mask))
    assert np.array_equal(T.resize_nearest(mask, (26, 34))[::2, ::2], mask)


@pytest.mark.parametrize("seed", range(4))
def test_geometric_pipeline_keeps_alignment(seed):
    torch.manual_seed(seed)
    image, mask = coord_pair()
    pipe = T.Compose(
        [
            T.RandomScale((0.5, 2.0), interpolation="nearest"),
            T.RandomCrop((32, 48), ignore_index=1 << 20),
            T.RandomFlip(0.5),
        ]
    )
    img, msk = pipe(image, mask)
    assert img.shape == (32, 48, 3) and msk.shape == (32, 48)
    valid = msk != 1 << 20
    assert valid.any()
    assert np.array_equal(mask_from_image(img)[valid], msk[valid])
    assert (img[~valid] == 0).all()  # padded image area is pad_value where the mask is ignore


def test_bilinear_scale_keeps_alignment_approximately():
    torch.manual_seed(0)
    image, mask = coord_pair(60, 80)
    img, msk = T.RandomScale((1.7, 1.7))(image, mask)
    assert img.shape[:2] == msk.shape == (102, 136)
    code = img.astype(np.int64)
    # bilinear coordinates are within one source pixel of the nearest-sampled mask coordinates
    assert np.abs(code[..., 0] - msk // 256).max() <= 1
    assert np.abs(code[..., 1] - msk % 256).max() <= 1


def test_flip_probability_one_and_zero():
    image, mask = coord_pair()
    img, msk = T.RandomFlip(1.0)(image, mask)
    assert np.array_equal(img, image[:, ::-1]) and np.array_equal(msk, mask[:, ::-1])
    img, msk = T.RandomFlip(0.0)(image, mask)
    assert np.array_equal(img, image) and np.array_equal(msk, mask)


def test_crop_pads_mask_with_ignore_index():
    image = np.full((10, 12, 3), 7, np.uint8)
    mask = np.ones((10, 12), np.int64)
    img, msk = T.RandomCrop((16, 20), ignore_index=255)(image, mask)
    assert img.shape == (16, 20, 3) and msk.shape == (16, 20)
    assert (msk[10:] == 255).all() and (msk[:, 12:] == 255).all() and (msk[:10, :12] == 1).all()
    assert (img[10:] == 0).all() and (img[:10, :12] == 7).all()


def test_cat_max_ratio_rejects_single_class_crops():
    # 8x30 mask, class 1 in the last 8 columns: only 3 of the 23 possible 8x8 windows are "balanced"
    # (no class >= 75 %), so plain crops hit one ~13 % of the time, the 10-retry rule ~78 %.
    mask = np.zeros((8, 30), np.int64)
    mask[:, 22:] = 1
    image = np.zeros((8, 30, 3), np.uint8)
    rule, plain = T.RandomCrop(8, cat_max_ratio=0.75), T.RandomCrop(8)
    hits_rule, hits_plain = 0, 0
    for s in range(60):
        torch.manual_seed(s)
        hits_rule += rule._balanced(rule(image, mask)[1])
        torch.manual_seed(s)
        hits_plain += rule._balanced(plain(image, mask)[1])
    assert hits_plain < 18 and hits_rule > 35


def test_cat_max_ratio_ignores_ignore_pixels():
    crop = T.RandomCrop(4, cat_max_ratio=0.75, ignore_index=255)
    assert not crop._balanced(np.array([[0, 0], [255, 255]]))  # one class only
    assert crop._balanced(np.array([[0, 1], [255, 255]]))
    assert not crop._balanced(np.array([[0, 0], [0, 1]]))  # 0.75 is not < 0.75


def test_photometric_changes_image_not_mask():
    torch.manual_seed(1)
    image = np.random.randint(0, 256, size=(16, 16, 3)).astype(np.uint8)
    mask = np.random.randint(0, 3, size=(16, 16)).astype(np.int64)
    changed = 0
    for _ in range(5):
        img, msk = T.PhotoMetricDistortion()(image, mask)
        assert img.dtype == np.uint8 and img.shape == image.shape
        assert msk is mask
        changed += not np.array_equal(img, image)
    assert changed >= 3


def test_hsv_round_trip():
    rgb = np.random.rand(50, 3)
    assert np.allclose(T.hsv_to_rgb(T.rgb_to_hsv(rgb)), rgb, atol=1e-9)
    assert np.allclose(T.rgb_to_hsv(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))[:, 0], [0.0, 1 / 3])


def test_normalize_and_to_tensor():
    image = np.full((4, 5, 3), 255, np.uint8)
    mask = np.zeros((4, 5), np.int64)
    img, msk = T.Normalize(mean=(0, 0, 255), std=(255, 1, 1))(image, mask)
    assert img.dtype == np.float32 and np.allclose(img[0, 0], [1.0, 255.0, 0.0])
    ti, tm = T.ToTensor()(img, msk)
    assert ti.shape == (3, 4, 5) and ti.dtype == torch.float32 and tm.dtype == torch.int64
    ti, _ = T.ToTensor()(image, mask)
    assert torch.allclose(ti, torch.ones(3, 4, 5))


def test_resize_keep_ratio_mmcv_rule():
    image, mask = coord_pair(50, 100)
    img, msk = T.Resize((512, 2048), keep_ratio=True)(image, mask)
    assert img.shape[:2] == msk.shape == (512, 1024)  # min(512 / 50, 2048 / 100) = 10.24
    img, msk = T.Resize((20, 30), resize_mask=False)(image, mask)
    assert img.shape[:2] == (20, 30) and msk.shape == (50, 100)


def test_build_transforms_train_and_eval():
    torch.manual_seed(0)
    image, mask = coord_pair(40, 56)
    train = T.build_transforms(
        True, crop_size=(24, 32), scale_range=(0.5, 1.5), mean=(0, 0, 0), std=(1, 1, 1)
    )
    img, msk = train(image, np.minimum(mask, 3))
    assert img.shape == (3, 24, 32) and msk.shape == (24, 32) and img.dtype == torch.float32
    evaluate = T.build_transforms(False, resize=(20, 28))
    img, msk = evaluate(image, mask)
    assert img.shape == (3, 20, 28) and msk.shape == (20, 28)
    assert abs(float(img.mean())) < 3


def test_randomness_follows_torch_seed():
    image, mask = coord_pair()
    pipe = T.build_transforms(True, crop_size=16)
    torch.manual_seed(5)
    a = pipe(image, mask)
    torch.manual_seed(5)
    b = pipe(image, mask)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("src, dst", [(4, 2), (13, 7), (40, 11), (17, 34), (10, 3), (3, 10)])
def test_nearest_resize_samples_pixel_centres(src, dst):
    # output pixel i covers [i, i + 1) * src / dst of the source; its centre (i + 0.5) * src / dst picks
    # the source pixel, as PIL's NEAREST does; corner sampling (i * src / dst) is half a pixel off
    from PIL import Image

    line = np.arange(src, dtype=np.int64)
    expected = np.floor((np.arange(dst) + 0.5) * src / dst).astype(np.int64)
    assert np.array_equal(T.resize_nearest(line[:, None], (dst, 1))[:, 0], expected)
    grid = (np.arange(src)[:, None] * 16 + np.arange(src)[None, :]).astype(np.uint8)
    pil = np.asarray(Image.fromarray(grid).resize((dst, dst), Image.NEAREST))
    assert np.array_equal(T.resize_nearest(grid, (dst, dst)), pil)


def test_downscaled_mask_stays_on_the_downscaled_image():
    # a one-pixel-wide line: a 4x downscale keeps the mask where the bilinear image keeps its weight
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, 18] = 255
    mask = (image[..., 0] > 0).astype(np.int64)
    small_image = T.resize_image(image, (8, 8))
    small_mask = T.resize_nearest(mask, (8, 8))
    assert np.array_equal(np.flatnonzero(small_mask[0]), [4]) and small_image[0, :, 0].argmax() == 4


@pytest.mark.parametrize("make, fragment", [
    (lambda: T.RandomCrop((0, 0)), "RandomCrop crop_size must be an integer >= 1"),
    (lambda: T.RandomCrop(-4), "got -4"),
    (lambda: T.Resize((0, 12)), "Resize size must be"),
    (lambda: T.RandomScale(base_size=(2.5, 3)), "RandomScale base_size must be"),
    (lambda: T.Normalize(std=[58.4, 0.0, 57.4]), "std must be finite and > 0"),
    (lambda: T.Normalize(mean=[1.0, 2.0], std=[1.0, 2.0, 3.0]), "one value per channel"),
    (lambda: T.build_transforms(True, crop_size=0), "crop_size must be an integer >= 1"),
])
def test_sizes_and_normalisation_that_mean_nothing_are_refused(make, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        make()
