"""SyntheticContext tasks (issue 30): relational, small-objects, clean-background; the default unchanged."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from segattn.data import build_dataset
from segattn.data.synthetic import CUE_COLORS, PATTERNS, TASKS, SyntheticContext
from segattn.engine.config import load_config


def _digest(ds: SyntheticContext, n: int) -> str:
    h = hashlib.sha256()
    for i in range(n):
        image, mask = ds.generate(i)
        h.update(image.tobytes())
        h.update(mask.tobytes())
    return h.hexdigest()[:16]


def test_default_task_is_byte_identical_to_before():
    # digests of the generator before the task option existed (commit b1aa44d), 20 items, seed 5
    assert _digest(SyntheticContext(20, seed=5), 20) == "e620f0a96d713cfc"
    protocol = dict(size=(128, 128), num_classes=3, cue_size=32, margin=32)
    assert _digest(SyntheticContext(20, seed=5, **protocol), 20) == "ed50c897071e0a75"
    assert _digest(SyntheticContext(20, seed=5, task="context", **protocol), 20) == "ed50c897071e0a75"


@pytest.mark.parametrize("task", TASKS)
def test_every_task_is_deterministic_and_valid(task):
    kw = dict(size=(64, 64), num_classes=3, cue_size=8, margin=12, task=task)
    a, b = SyntheticContext(6, seed=2, **kw), SyntheticContext(6, seed=2, **kw)
    for i in range(6):
        (ia, ma), (ib, mb) = a.generate(i), b.generate(i)
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)
        assert ia.dtype == np.uint8 and ia.shape == (64, 64, 3) and set(np.unique(ma)) <= {0, 1, 2}
    assert not np.array_equal(a.generate(0)[0], SyntheticContext(6, seed=3, **kw).generate(0)[0])
    assert task in repr(a) or task == "context"
    assert len(a.classes) == 3


def test_unknown_task_and_bad_sizes_are_one_clear_error():
    with pytest.raises(ValueError, match="synthetic task must be one of context, relational"):
        SyntheticContext(2, task="relation")
    with pytest.raises(ValueError, match="small-objects has 4 textures"):
        SyntheticContext(2, task="small-objects", num_classes=7)
    with pytest.raises(ValueError, match="relational needs num_classes >= 3"):
        SyntheticContext(2, task="relational", num_classes=2)


def _bars(image: np.ndarray, cue: int):
    def colour(block):
        px = block.reshape(-1, 3)
        assert (px == px[0]).all()
        return CUE_COLORS.index(tuple(int(v) for v in px[0]))

    return colour(image[:, :cue]), colour(image[:, -cue:])


def test_relational_label_is_the_colour_of_the_bar_on_the_shapes_side():
    ds = SyntheticContext(200, seed=0, size=(64, 64), num_classes=5, cue_size=6, margin=10, task="relational")
    pairs = {}
    for i in range(200):
        image, mask = ds.generate(i)
        a, b = _bars(image, 6)
        assert a != b
        pairs[(a, b)] = pairs.get((a, b), 0) + 1
        left, right = mask[:, :32], mask[:, 32:]
        assert set(np.unique(left)) <= {0, 1 + a} and set(np.unique(right)) <= {0, 1 + b}
        assert (mask[:, :10] == 0).all() and (mask[:, -10:] == 0).all()
    # the ordered colour pairs are uniform: 12 pairs, about 200 / 12 each
    assert len(pairs) == 12 and min(pairs.values()) >= 6 and max(pairs.values()) <= 30


def test_relational_global_summary_cannot_carry_the_label():
    """The bar swap T: same pixel multiset (global mean, histogram), same shapes, every shape label swapped.
    With P(a, b) = P(b, a) (uniform ordered pairs, shapes drawn independently of the colours) T is
    probability preserving, so given any position-free summary of the pixels and a shape pixel's own
    patch both colours are equally likely: the Bayes classifier on that is at chance (1/2) between them."""
    ds = SyntheticContext(50, seed=1, size=(64, 64), num_classes=3, cue_size=6, margin=10, task="relational")
    correct = total = 0
    for i in range(50):
        image, mask = ds.generate(i)
        a, b = _bars(image, 6)
        swapped = image.copy()
        swapped[:, :6], swapped[:, -6:] = CUE_COLORS[b], CUE_COLORS[a]
        swapped_mask = np.where(mask == 1 + a, 1 + b, np.where(mask == 1 + b, 1 + a, mask))
        assert np.array_equal(np.sort(image.reshape(-1, 3), 0), np.sort(swapped.reshape(-1, 3), 0))
        assert np.array_equal(image.reshape(-1, 3).mean(0), swapped.reshape(-1, 3).mean(0))
        shape = mask > 0
        assert np.array_equal(image[shape], swapped[shape])  # shapes' own pixels unchanged
        assert (swapped_mask[shape] != mask[shape]).all()  # and every shape label swapped
        # the global-mean "classifier": any rule g(mean, own pixel) scores the same on I and T(I), and on
        # the pair it is right on exactly one of the two: accuracy 1/2
        guess = 1 + a  # e.g. always the colour of the left bar, as read from a position-free summary
        correct += int((mask[shape] == guess).sum() + (swapped_mask[shape] == guess).sum())
        total += 2 * int(shape.sum())
    assert correct / total == pytest.approx(0.5, abs=1e-12)


def test_small_objects_label_needs_own_texture_and_cue():
    k_classes = 3
    ds = SyntheticContext(60, seed=0, size=(96, 96), num_classes=k_classes, cue_size=8, margin=16,
                          task="small-objects", num_blobs=(3, 5))
    textures = [ds._pattern(t) for t in range(len(PATTERNS))]
    by_texture, small_areas = {}, []
    from scipy import ndimage

    for i in range(60):
        image, mask = ds.generate(i)
        colour = (image[..., 0] != image[..., 1]) | (image[..., 1] != image[..., 2])
        k = CUE_COLORS.index(tuple(int(v) for v in image[colour][0]))
        comp = ndimage.label(mask > 0)[0]  # 4-connected components
        for c in range(1, comp.max() + 1):
            region = comp == c
            labels = np.unique(mask[region])
            if len(labels) != 1:  # overlapping rectangles of two textures: skip
                continue
            t = [j for j in range(k_classes - 1) if (image[region][:, 0] == textures[j][region]).all()]
            if len(t) != 1:
                continue
            assert labels[0] == 1 + (t[0] + k) % (k_classes - 1)
            by_texture.setdefault(t[0], set()).add(int(labels[0]))
            small_areas.append(int(region.sum()))
    # the same texture carries both classes (so its pixels alone cannot tell), and small segments exist
    assert all(len(v) == 2 for v in by_texture.values()) and len(by_texture) == 2
    assert min(small_areas) <= 25


def test_clean_background_is_smooth_and_keeps_the_context_rule():
    ds = SyntheticContext(20, seed=0, task="clean-background")
    for i in range(20):
        image, mask = ds.generate(i)
        bg = (mask == 0) & (image[..., 0] == image[..., 1]) & (image[..., 1] == image[..., 2])
        g = image[..., 0].astype(int)
        dx = np.abs(np.diff(g, axis=1))[bg[:, 1:] & bg[:, :-1]]
        assert dx.max() <= 2  # a ramp of at most 20 levels over 64 px, not pixel noise
        fg = np.unique(mask[mask > 0])
        assert len(fg) == 1 and np.all(image == np.asarray(CUE_COLORS[int(fg[0]) - 1], np.uint8), -1).any()


def test_tasks_are_usable_from_configs():
    for task in ("relational", "small-objects", "clean-background"):
        cfg = load_config(f"synthetic/compare_synthetic_{task.replace('-', '_')}.yaml")
        assert cfg.data.dataset_kwargs["task"] == task
        kw = {**cfg.data.dataset_kwargs, **cfg.data.val_kwargs}
        ds = build_dataset("synthetic", split="val", **kw)
        assert ds.task == task and ds[0][0].shape[-2:] == tuple(cfg.data.dataset_kwargs["size"])
