"""`segattn.analyze.metrics`: each metric on constructed inputs whose answer is known by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from segattn.analyze import metrics as M


def _features(c=16, h=12, w=12, seed=0):
    return torch.randn(c, h, w, generator=torch.Generator().manual_seed(seed))


def _labels(h=12, w=12):
    lab = torch.zeros(h, w, dtype=torch.long)
    lab[:, w // 2:] = 1
    lab[: h // 3, : w // 3] = 2
    return lab


def test_identity_keeps_separation_and_rank():
    x, lab = _features(), _labels()
    y = x.clone()  # the identity module
    assert M.class_separation(y, lab) / M.class_separation(x, lab) == pytest.approx(1.0, abs=1e-12)
    assert M.effective_rank(y) == pytest.approx(M.effective_rank(x), abs=1e-9)
    noise = 0.1 * torch.randn_like(x)
    assert M.noise_to_signal_gain(x, x + noise, y, y + noise) == pytest.approx(1.0, abs=1e-12)
    # an orthogonal map of the channels and a global scale leave J unchanged too (documented invariance)
    q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    z = 3.0 * (q @ x.reshape(16, -1).double()).reshape(x.shape)
    assert M.class_separation(z, lab) == pytest.approx(M.class_separation(x, lab), rel=1e-9)


def test_class_separation_by_hand():
    # two classes, 1-D features: class 0 at {0, 2} (mean 1), class 1 at {10, 12} (mean 11)
    x = torch.tensor([[0.0, 2.0, 10.0, 12.0]])
    lab = torch.tensor([0, 0, 1, 1])
    # W = (1 + 1 + 1 + 1) / 4 = 1; B = ||1 - 11||^2 = 100
    assert M.class_separation(x, lab) == pytest.approx(0.01)
    # replacing every pixel by its class mean (perfect smoothing) gives J = 0
    assert M.class_separation(torch.tensor([[1.0, 1.0, 11.0, 11.0]]), lab) == 0.0
    # ignored pixels do not count; one class left -> undefined
    assert math.isnan(M.class_separation(x, torch.tensor([0, 0, 255, 255])))


@pytest.mark.parametrize("k", [1, 3, 7])
def test_rank_k_projection_has_effective_rank_at_most_k(k):
    x = _features(c=32, h=10, w=10).reshape(32, -1).double()
    u, _, _ = torch.linalg.svd(torch.randn(32, 32, dtype=torch.float64))
    p = u[:, :k] @ u[:, :k].T  # rank-k orthogonal projector
    assert M.effective_rank(x) > k
    assert M.effective_rank(p @ x) <= k + 1e-9
    # k equal singular values: exactly k
    assert M.effective_rank(u[:, :k] @ torch.eye(k, 100, dtype=torch.float64)) == pytest.approx(k, abs=1e-9)


@pytest.mark.parametrize("size", [3, 5])
def test_averaging_filter_attenuates_white_noise_by_its_size(size):
    # a constant signal plus white noise through a size x size box filter (circular padding, so every
    # output averages size^2 independent noise values): NSR_out / NSR_in = 1 / size^2 in expectation
    g = torch.Generator().manual_seed(1)
    clean = torch.full((1, 8, 96, 96), 2.0, dtype=torch.float64)
    noisy = clean + 0.3 * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    weight = torch.full((8, 1, size, size), 1.0 / size**2, dtype=torch.float64)

    def box(t):
        pad = size // 2
        return F.conv2d(F.pad(t, (pad, pad, pad, pad), mode="circular"), weight, groups=8)

    gain = M.noise_to_signal_gain(clean, noisy, box(clean), box(noisy))
    assert gain == pytest.approx(1.0 / size**2, rel=0.05)


def test_bases_cosine_and_reconstruction():
    b = torch.randn(16, 1).repeat(1, 5)
    assert M.mean_pairwise_cosine(b) == pytest.approx(1.0, abs=1e-6)  # identical bases
    assert M.mean_pairwise_cosine(torch.eye(16)[:, :6]) == pytest.approx(0.0, abs=1e-12)  # orthogonal
    assert M.mean_pairwise_cosine(torch.tensor([[1.0, -1.0], [0.0, 0.0]])) == pytest.approx(-1.0)
    f = torch.randn(16, 40)
    assert M.reconstruction_error(f, 0.5 * f) == pytest.approx(0.0, abs=1e-12)  # exact up to scale
    other = torch.randn(16, 40)
    other = other - (other * f).sum() / (f * f).sum() * f  # orthogonal to f (Frobenius)
    assert M.reconstruction_error(f, other) == pytest.approx(1.0, abs=1e-9)


def test_attention_distances_and_entropy():
    uniform = torch.full((4, 10), 0.1)
    assert M.mean_pairwise_tv(uniform) == pytest.approx(0.0)  # query-independent maps
    assert M.mean_pairwise_tv(torch.eye(10)[:4]) == pytest.approx(1.0)  # disjoint one-hot maps
    assert M.total_variation_distance(torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.0, 0.5, 0.5])) == pytest.approx(0.5)
    assert M.entropy_ratio(torch.full((7, 4), 0.25)) == pytest.approx(1.0)
    assert M.entropy_ratio(torch.eye(4)) == pytest.approx(0.0)


def test_segments_and_accuracy_by_area():
    target = torch.zeros(10, 10, dtype=torch.long)
    target[1:3, 1:3] = 1  # area 4
    target[5:9, 5:9] = 1  # area 16, not touching the first
    target[0, 9] = 2  # area 1
    comp = M.connected_components(target == 1)
    assert int(comp.max()) == 2 and sorted(torch.bincount(comp.flatten())[1:].tolist()) == [4, 16]
    pred = target.clone()
    pred[5:9, 5] = 0  # 4 of the 16 pixels wrong
    recs = M.segment_records(pred, target, classes=[1, 2])
    assert sorted((r["area"], r["correct"]) for r in recs) == [(1, 1), (4, 4), (16, 12)]
    assert M.accuracy_by_area(recs, [0, 5, 100]) == pytest.approx([100.0, 75.0])
    assert math.isnan(M.accuracy_by_area(recs, [100, 200])[0])


def test_effective_rank_by_hand():
    # singular values 3 and 1: p = (3/4, 1/4), erank = exp(-(3/4 ln 3/4 + 1/4 ln 1/4)) = 1.7548
    x = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert M.effective_rank(x) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))), rel=1e-9)
    assert math.isnan(M.effective_rank(torch.zeros(3, 4)))


def _flood_fill_components(mask):
    """Reference: breadth-first flood fill in plain Python, components numbered in raster order."""
    h, w = len(mask), len(mask[0])
    out = [[0] * w for _ in range(h)]
    n = 0
    for i in range(h):
        for j in range(w):
            if mask[i][j] and not out[i][j]:
                n += 1
                out[i][j] = n
                queue = [(i, j)]
                while queue:
                    y, x = queue.pop()
                    for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                        if 0 <= yy < h and 0 <= xx < w and mask[yy][xx] and not out[yy][xx]:
                            out[yy][xx] = n
                            queue.append((yy, xx))
    return out


def _serpentine(n):
    """A one-pixel-wide winding corridor: one component whose longest path is about n * n / 2 pixels."""
    m = torch.zeros(n, n, dtype=torch.bool)
    m[::2] = True
    for row in range(1, n, 2):
        m[row, n - 1 if row % 4 == 1 else 0] = True
    return m


@pytest.mark.parametrize("case", ["random-0.4", "random-0.6", "serpentine", "empty", "full", "single"])
def test_connected_components_match_flood_fill(case):
    g = torch.Generator().manual_seed(0)
    if case.startswith("random"):
        mask = torch.rand(23, 31, generator=g) < float(case.split("-")[1])
    elif case == "serpentine":
        mask = _serpentine(41)
    else:
        mask = torch.zeros(7, 9, dtype=torch.bool)
        if case == "full":
            mask[:] = True
        elif case == "single":
            mask[3, 4] = True
    got = M.connected_components(mask)
    assert got.dtype == torch.int64 and got.shape == mask.shape
    assert got.tolist() == _flood_fill_components(mask.tolist())
