"""SyntheticContext tasks (issue 30): relational, small-objects, clean-background, patchy; the default unchanged."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from segattn.data import build_dataset
from segattn.data.synthetic import CUE_COLORS, PATCH, PATTERNS, TASKS, SyntheticContext
from segattn.engine.config import load_config

CLEAN_DIGEST = "97fc417e87bd6507"


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
    with pytest.raises(ValueError, match="num_classes must be 1 \\+ textures x cue colours"):
        SyntheticContext(2, task="small-objects", num_classes=6)
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


SMALL = dict(size=(96, 96), cue_size=8, margin=16, task="small-objects", num_blobs=(3, 5),
             blob_size=(16, 24), small_size=(6, 10))


def _cue_of(image: np.ndarray) -> int:
    colour = (image[..., 0] != image[..., 1]) | (image[..., 1] != image[..., 2])
    found = {tuple(int(v) for v in px) for px in image[colour]}
    assert len(found) == 1
    return CUE_COLORS.index(found.pop())


def _rectangles(ds: SyntheticContext, image: np.ndarray, mask: np.ndarray):
    """(texture t, label, (top, left, height, width)) of every rectangle of a small-objects item."""
    from scipy import ndimage

    out = []
    comp, n = ndimage.label(mask > 0)
    for c, box in zip(range(1, n + 1), ndimage.find_objects(comp)):
        region = comp == c
        assert region[box].all()  # one full rectangle per component: they never touch
        labels = np.unique(mask[region])
        assert len(labels) == 1
        t = [j for j in range(ds.textures) if (image[region] == ds._pattern(j)[region][:, None]).all()]
        assert len(t) == 1
        out.append((t[0], int(labels[0]), (box[0].start, box[1].start, box[0].stop - box[0].start,
                                           box[1].stop - box[1].start)))
    return out


@pytest.mark.parametrize("num_classes, textures", [(5, 2), (7, 3), (7, 2)])
def test_small_objects_label_is_one_plus_texture_times_k_plus_cue(num_classes, textures):
    """Known answer: a rectangle with own texture t under cue colour k is labelled 1 + t * K + k,
    K = (num_classes - 1) / textures; every (t, k) pair occurs."""
    ds = SyntheticContext(80, seed=0, num_classes=num_classes, textures=textures, **SMALL)
    cues = (num_classes - 1) // textures
    assert ds.textures == textures and ds.cues == cues
    assert [ds.small_objects_label(t, k) for t in range(textures) for k in range(cues)] == \
        list(range(1, num_classes))
    seen = set()
    for i in range(80):
        image, mask = ds.generate(i)
        k = _cue_of(image)
        assert k < cues
        for t, label, _ in _rectangles(ds, image, mask):
            assert label == 1 + t * cues + k
            seen.add((t, k))
    assert seen == {(t, k) for t in range(textures) for k in range(cues)}
    assert ds.classes[1 + 1 * cues + 0] == f"{PATTERNS[1]} under red cue"


def test_small_objects_cue_swap_changes_only_the_cue_part():
    ds = SyntheticContext(20, seed=3, num_classes=7, textures=2, **SMALL)  # K = 3 cue colours
    for i in range(20):
        image, mask = ds.generate(i)
        k = _cue_of(image)
        for k2 in range(3):
            image2, mask2 = ds.generate_with_cue(i, k2)
            assert _cue_of(image2) == k2
            same = np.all(image == image2, -1)
            assert same[mask > 0].all() and (np.all(image2[~same] == CUE_COLORS[k2], -1)).all()
            fg = mask > 0
            assert np.array_equal(fg, mask2 > 0)
            assert np.array_equal((mask2[fg] - 1) // 3, (mask[fg] - 1) // 3)  # texture part t unchanged
            assert (mask2[fg] - 1 == (mask[fg] - 1) - k + k2).all()  # only k moved
        assert all(np.array_equal(a, b) for a, b in zip(ds.generate_with_cue(i, k), (image, mask)))
    with pytest.raises(ValueError, match="cue must be a cue colour in 0..2"):
        ds.generate_with_cue(0, 3)


def test_small_objects_sizes_margin_and_gap():
    ds = SyntheticContext(60, seed=1, num_classes=5, **SMALL)
    small = large = 0
    for i in range(60):
        image, mask = ds.generate(i)
        boxes = [b for _, _, b in _rectangles(ds, image, mask)]
        assert 1 <= len(boxes) <= 5
        for top, left, bh, bw in boxes:
            assert top >= 16 and left >= 16 and top + bh <= 80 and left + bw <= 80
            if 6 <= bh <= 10 and 6 <= bw <= 10:
                small += 1
            else:
                assert 16 <= bh <= 24 and 16 <= bw <= 24
                large += 1
        for a in range(len(boxes)):  # at least 2 px between any two rectangles
            for b in range(a):
                (t1, l1, h1, w1), (t2, l2, h2, w2) = boxes[a], boxes[b]
                assert t1 >= t2 + h2 + 2 or t2 >= t1 + h1 + 2 or l1 >= l2 + w2 + 2 or l2 >= l1 + w1 + 2
    assert small >= 40 and large >= 60


def test_small_objects_item_is_a_pure_function_of_seed_and_index():
    kw = dict(num_classes=5, **SMALL)
    a = SyntheticContext(10, seed=4, **kw)
    forward = [a.generate(i) for i in range(10)]
    backward = [SyntheticContext(10, seed=4, **kw).generate(i) for i in reversed(range(10))][::-1]
    for (ia, ma), (ib, mb) in zip(forward, backward):
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)
    assert not np.array_equal(forward[0][0], forward[1][0])
    assert not np.array_equal(forward[0][0], SyntheticContext(10, seed=5, **kw).generate(0)[0])
    assert _digest(a, 10) == "c2dc919686ca6bde"  # the generator as first published (pins the stream)


@pytest.mark.parametrize("kw, match", [
    (dict(num_classes=4), "num_classes must be 1 \\+ textures x cue colours with textures in 1..4, got num_classes 4, "
                          "textures 2"),
    (dict(num_classes=6, textures=5), "textures in 1..4, got num_classes 6, textures 5"),
    (dict(num_classes=5, small_size=(0, 4)), "small_size must be"),
])
def test_small_objects_wrong_num_classes_is_one_clear_line(kw, match):
    from segattn.errors import ArgumentError

    with pytest.raises(ArgumentError, match=match) as err:
        SyntheticContext(2, task="small-objects", **kw)
    assert "\n" not in str(err.value)


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


def test_clean_background_is_unchanged_by_the_patchy_task():
    # digest of the clean-background items before the patchy task existed (commit 7d1fc5d), 20 items, seed 5
    protocol = dict(size=(128, 128), num_classes=3, cue_size=32, margin=32)
    assert _digest(SyntheticContext(20, seed=5, task="clean-background", **protocol), 20) == CLEAN_DIGEST


def test_patchy_shades_every_cell_and_keeps_the_context_rule():
    protocol = dict(size=(128, 128), num_classes=3, cue_size=32, margin=32)
    ds = SyntheticContext(20, seed=0, task="patchy", **protocol)
    spreads = []
    for i in range(20):
        image, mask = ds.generate(i)
        g = image[..., 0].astype(int)
        grey = (image[..., 0] == image[..., 1]) & (image[..., 1] == image[..., 2])
        bg = (mask == 0) & grey
        # inside one 8x8 block the background is smooth (the ramp moves at most 1-2 levels per pixel) ...
        inside = np.abs(np.diff(g, axis=1))[bg[:, 1:] & bg[:, :-1] & (np.arange(1, 128) % PATCH != 0)[None, :]]
        assert inside.max() <= 2
        # ... and the blocks differ: the block means of the background spread over tens of grey levels
        means = [g[y:y + PATCH, x:x + PATCH][bg[y:y + PATCH, x:x + PATCH]].mean()
                 for y in range(0, 128, PATCH) for x in range(0, 128, PATCH) if bg[y:y + PATCH, x:x + PATCH].all()]
        spreads.append(np.std(means))
        fg = np.unique(mask[mask > 0])  # the context rule: one class, the cue's colour, painted unshaded
        assert len(fg) == 1 and np.all(image == np.asarray(CUE_COLORS[int(fg[0]) - 1], np.uint8), -1).sum() >= 32 * 32
    # uniform offsets in [-40, 40] have sd 80 / sqrt(12) = 23.1 (the ramp and the clipping move it a little)
    assert 18 < np.mean(spreads) < 28
    clean = SyntheticContext(20, seed=0, task="clean-background", **protocol)
    assert np.mean([np.abs(np.diff(clean.generate(i)[0][..., 0].astype(int), axis=1)).mean() for i in range(5)]) < \
        np.mean([np.abs(np.diff(ds.generate(i)[0][..., 0].astype(int), axis=1)).mean() for i in range(5)])


def test_tasks_are_usable_from_configs():
    for task in ("relational", "small-objects", "clean-background", "patchy"):
        cfg = load_config(f"synthetic/compare_synthetic_{task.replace('-', '_')}.yaml")
        assert cfg.data.dataset_kwargs["task"] == task
        kw = {**cfg.data.dataset_kwargs, **cfg.data.val_kwargs}
        ds = build_dataset("synthetic", split="val", **kw)
        assert ds.task == task and ds[0][0].shape[-2:] == tuple(cfg.data.dataset_kwargs["size"])
