"""`segattn.analyze.survey_metrics`: each metric on a constructed case whose answer is known by hand."""

import math

import pytest
import torch

from segattn.analyze import survey_metrics as S


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _two_segments(size, step, seed):
    """Labels 0 | 1 (left | right half of a size x size grid), 4 channels at 0 | ``step``, and the same
    plus unit white noise: (labels, clean, noisy)."""
    lab = torch.zeros(size, size, dtype=torch.long)
    lab[:, size // 2:] = 1
    clean = torch.zeros(4, size, size, dtype=torch.float64)
    clean[:, :, size // 2:] = step
    return lab, clean, clean + torch.randn(clean.shape, generator=_gen(seed), dtype=torch.float64)


# ------------------------------------------------------------------------------------------ Fisher
def test_fisher_ratio_by_hand():
    # class 0 at {0, 2} (mean 1), class 1 at {10, 12} (mean 11): S_W = 1, S_B = 0.5 * 25 + 0.5 * 25 = 25
    x = torch.tensor([[0.0, 2.0, 10.0, 12.0]])
    lab = torch.tensor([0, 0, 1, 1])
    assert S.fisher_ratio(x, lab, ridge=0.0) == pytest.approx(25.0)
    # unequal counts: class 0 = {0, 2, 0, 2}: m = (4 + 22) / 6, S_B = (4 (1 - m)^2 + 2 (11 - m)^2) / 6
    x2 = torch.tensor([[0.0, 2.0, 0.0, 2.0, 10.0, 12.0]])
    lab2 = torch.tensor([0, 0, 0, 0, 1, 1])
    m = 26.0 / 6
    assert S.fisher_ratio(x2, lab2, ridge=0.0) == pytest.approx((4 * (1 - m) ** 2 + 2 * (11 - m) ** 2) / 6)
    assert math.isnan(S.fisher_ratio(x, torch.tensor([0, 0, 255, 255])))


def test_fisher_ratio_invariant_to_linear_maps_and_lowered_by_rank_loss():
    g = _gen(1)
    lab = torch.arange(3).repeat_interleave(200)
    means = 2.0 * torch.randn(8, 3, generator=g, dtype=torch.float64)
    x = means[:, lab] + torch.randn(8, 600, generator=g, dtype=torch.float64)
    a = torch.randn(8, 8, generator=g, dtype=torch.float64)  # a general invertible linear map
    base = S.fisher_ratio(x, lab, ridge=0.0)
    assert S.fisher_ratio(a @ x, lab, ridge=0.0) == pytest.approx(base, rel=1e-8)
    # a rank-1 projection onto a direction unrelated to the classes loses almost everything
    u = torch.randn(8, 1, generator=g, dtype=torch.float64)
    assert S.fisher_ratio(u @ (u.T @ x), lab) < base
    # the ideal reconstruction (every pixel replaced by its class mean plus a little noise) is easier
    rec = means[:, lab] + 0.1 * torch.randn(8, 600, generator=g, dtype=torch.float64)
    assert S.fisher_ratio(rec, lab) > 50 * base


def test_fisher_ratio_reaches_its_ridge_bound_along_a_direction_without_within_class_spread():
    """Channel 0 separates the classes (+-1) with no spread inside them, channel 1 is noise of variance 1
    in both: S_W = diag(0, 1), S_B = diag(1, 0), eps = ridge * tr(S_W) / C, so the criterion is 1 / eps,
    the bound ridge^-1 * C * tr(S_B) / tr(S_W) that docs/explanations/low-rank.md states."""
    lab = torch.tensor([0, 0, 1, 1])
    x = torch.tensor([[-1.0, -1.0, 1.0, 1.0], [-1.0, 1.0, -1.0, 1.0]], dtype=torch.float64)
    for ridge in (1e-6, 1e-3):
        assert S.fisher_ratio(x, lab, ridge=ridge) == pytest.approx(2 * 1.0 / (ridge * 1.0), rel=1e-9)


# ---------------------------------------------------------------------------------------- denoising
def test_identity_passes_noise_and_signal_alike():
    g = _gen(2)
    r = torch.randn(2, 8, 20, 20, generator=g, dtype=torch.float64)
    n = 0.1 * torch.randn(r.shape, generator=g)
    assert S.noise_gain(r, r + n, n) == pytest.approx(1.0, abs=1e-12)
    assert S.signal_gain(r, r) == pytest.approx(1.0, abs=1e-12)
    assert S.denoising_index(r, r, r + n, n) == pytest.approx(1.0, abs=1e-12)
    # GCNet-like: input plus one constant vector per image: not a denoiser (the old NSR gain said 0.8)
    def gc(t):
        return t + 5.0 * torch.ones(1, 8, 1, 1)
    assert S.denoising_index(r, gc(r), gc(r + n), n) == pytest.approx(1.0, abs=1e-9)
    # a pure scaling neither
    assert S.denoising_index(r, 3 * r, 3 * (r + n), n) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("k", [3, 5])
def test_box_filter_passes_one_over_k_squared_of_white_noise(k):
    g = _gen(3)
    n = torch.randn(1, 8, 128, 128, generator=g, dtype=torch.float64)
    assert S.noise_gain(torch.zeros_like(n), S.box_filter(n, k), n) == pytest.approx(1.0 / k**2, rel=0.06)
    # a smooth signal (one slow ramp) passes nearly unchanged: the index is about 1 / k^2 as well
    yy = torch.linspace(0, 1, 128, dtype=torch.float64)[:, None].expand(128, 128)
    sig = yy.expand(1, 8, 128, 128).clone()
    idx = S.denoising_index(sig, S.box_filter(sig, k), S.box_filter(sig + n, k), n)
    assert idx == pytest.approx(1.0 / k**2, rel=0.1)
    assert S.box_filter(sig, k).shape == sig.shape
    with pytest.raises(ValueError, match="odd"):
        S.box_filter(sig, 2)


# ---------------------------------------------------------------------------------------- smoothing
def test_variance_split_by_hand():
    x = torch.tensor([[0.0, 2.0, 10.0, 12.0]])
    lab = torch.tensor([0, 0, 1, 1])
    v = S.variance_split(x, lab)
    # within: every pixel 1 from its class mean -> 1; between: means 1 and 11 around 6 -> 25; total 26
    assert v == pytest.approx({"within": 1.0, "between": 25.0, "total": 26.0})
    g = _gen(4)
    f = torch.randn(5, 7, 9, generator=g)
    lab3 = torch.randint(3, (7, 9), generator=g)
    v3 = S.variance_split(f, lab3)
    assert v3["within"] + v3["between"] == pytest.approx(v3["total"], rel=1e-9)


def test_variance_split_tells_smoothing_from_inflation():
    # smoothing (each pixel pulled towards its class mean) lowers within, keeps between;
    # inflating the class distance raises between, keeps within: J = within/between falls in both
    g = _gen(5)
    lab = torch.arange(2).repeat_interleave(300)
    means = torch.tensor([[0.0, 3.0]] * 4, dtype=torch.float64)
    noise = torch.randn(4, 600, generator=g, dtype=torch.float64)
    for c in (0, 1):  # noise centred within each class, so scaling it leaves the class means alone
        noise[:, lab == c] -= noise[:, lab == c].mean(1, keepdim=True)
    x = means[:, lab] + noise
    smooth = means[:, lab] + 0.5 * noise
    inflate = 2 * means[:, lab] + noise
    v, vs, vi = (S.variance_split(t, lab) for t in (x, smooth, inflate))
    assert vs["within"] == pytest.approx(0.25 * v["within"], rel=1e-9)
    assert vs["between"] == pytest.approx(v["between"], rel=1e-9)
    assert vi["within"] == pytest.approx(v["within"], rel=1e-9)
    assert vi["between"] == pytest.approx(4 * v["between"], rel=1e-9)


def test_boundary_contrast_by_hand_and_controls():
    # 1 channel, 2x4: left half 0, right half 4 (label 0 / 1) plus a checkerboard of +-1 inside
    lab = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])
    x = torch.tensor([[[1.0, -1.0, 5.0, 3.0], [-1.0, 1.0, 3.0, 5.0]]])
    # same-label pairs: 8 (4 horizontal inside, 4 vertical), each diff^2 = 4; edge pairs: 2,
    # (-1 - 5)^2 = 36 and (1 - 3)^2 = 4 -> mean 20; contrast 20 / 4 = 5
    assert S.boundary_contrast(x, lab) == pytest.approx(5.0)
    # expectation 1 + ||a - b||^2 / (2 C s^2) for constant segments in white noise
    g = _gen(6)
    lab2 = torch.zeros(64, 64, dtype=torch.long)
    lab2[:, 32:] = 1
    clean = torch.zeros(4, 64, 64, dtype=torch.float64)
    clean[:, :, 32:] = 1.0
    x2 = clean + 0.5 * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    assert S.boundary_contrast(x2, lab2) == pytest.approx(1 + 4 / (2 * 4 * 0.25), rel=0.1)
    # controls: the identity leaves it, a box filter (smoothing across edges too) still raises it here
    # because the inside noise falls by 1/9 while the step survives
    assert S.boundary_contrast(S.box_filter(x2[None], 3)[0], lab2) > S.boundary_contrast(x2, lab2)
    with pytest.raises(ValueError):
        S.boundary_contrast(x2[0], lab2)


def test_label_box_filter_never_mixes_labels_and_averages_inside():
    # two constant segments: unchanged, however large the window
    lab = torch.zeros(16, 16, dtype=torch.long)
    lab[:, 8:] = 1
    lab[0, 0] = 255  # an ignored pixel keeps its value
    x = torch.zeros(2, 16, 16, dtype=torch.float64)
    x[:, :, 8:] = 3.0
    x[:, 0, 0] = 7.0
    assert torch.allclose(S.label_box_filter(x, lab, 7), x, rtol=0, atol=1e-12)
    # by hand: a 1 x 3 strip, one label, values 0, 3, 6, window 3 cut at the border -> 1.5, 3, 4.5
    strip = torch.tensor([[[0.0, 3.0, 6.0]]], dtype=torch.float64)
    got = S.label_box_filter(strip, torch.zeros(1, 3, dtype=torch.long), 3)
    assert torch.allclose(got, torch.tensor([[[1.5, 3.0, 4.5]]], dtype=torch.float64))
    # white noise on the two segments: the within-class share falls, the edge contrast rises (the ideal
    # edge-preserving smoother); a plain box filter lowers the edge contrast relative to it
    lab, clean, noisy = _two_segments(32, 1.0, 7)
    smooth = S.label_box_filter(noisy, lab, 7)
    share = [S.variance_split(t, lab)["within"] / S.variance_split(t, lab)["total"] for t in (noisy, smooth)]
    assert share[1] < 0.5 * share[0]
    assert S.boundary_contrast(smooth, lab) > 5 * S.boundary_contrast(noisy, lab)
    assert S.boundary_contrast(S.box_filter(noisy[None], 7)[0], lab) < S.boundary_contrast(smooth, lab)
    with pytest.raises(ValueError):
        S.label_box_filter(noisy, lab, 4)


# -------------------------------------------------------------------------------------------- bases
def test_cosines_comparable_across_spaces():
    g = _gen(7)
    feats = torch.relu(torch.randn(32, 400, generator=g, dtype=torch.float64) + 0.5)  # post-ReLU space
    bases = feats[:, torch.randperm(400, generator=g)[:16]]  # bases that are just random pixels
    raw = S._mean_offdiag_cosine(bases)
    assert raw > 0.4  # high raw cosine, fixed by the space
    assert abs(S.centred_cosine(bases, feats)) < 0.1
    assert abs(S.relative_cosine(bases, feats, generator=_gen(8))) < 0.05
    # collapsed bases: one vector repeated -> cosine 1 raw, 1 centred, relative far above 0
    one = feats[:, :1].repeat(1, 8)
    assert S.centred_cosine(one, feats) == pytest.approx(1.0, abs=1e-9)
    assert S.relative_cosine(one, feats, generator=_gen(8)) > 0.4


def test_gram_erank_fraction():
    assert S.gram_erank_fraction(torch.eye(16)[:, :8]) == pytest.approx(1.0, abs=1e-9)  # orthogonal
    assert S.gram_erank_fraction(torch.randn(16, 1).repeat(1, 8)) == pytest.approx(1 / 8, abs=1e-6)
    # two orthogonal directions, each used by 4 of 8 bases: 2 / 8
    two = torch.cat([torch.eye(4)[:, :1].repeat(1, 4), torch.eye(4)[:, 1:2].repeat(1, 4)], 1)
    assert S.gram_erank_fraction(two) == pytest.approx(2 / 8, abs=1e-6)


def test_masked_reconstruction_error():
    g = _gen(9)
    f = torch.randn(8, 100, generator=g, dtype=torch.float64)
    mask = torch.zeros(100, dtype=torch.bool)
    mask[:5] = True
    r = 2.0 * f.clone()  # exact up to scale
    assert S.masked_reconstruction_error(f, r, mask) == pytest.approx(0.0, abs=1e-12)
    r[:, :5] = 0  # the small segment's pixels lost, the rest exact: error 1 there
    assert S.masked_reconstruction_error(f, r, mask) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(S.masked_reconstruction_error(f, r, torch.zeros(100, dtype=torch.bool)))


def test_counterfactual_change():
    g = _gen(10)
    a = torch.randn(4, 6, 6, generator=g)
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[2:4, 2:4] = True
    b = a.clone()
    b[:, 0, 0] += 10.0  # changed far from the masked pixels only
    assert S.counterfactual_change(a, b, mask) == 0.0
    c = a.clone()
    c[:, mask] *= 2  # the masked pixels doubled: change energy = their energy
    assert S.counterfactual_change(a, c, mask) == pytest.approx(1.0, rel=1e-9)


def test_roughness_by_hand_and_known_answers():
    # by hand: 1 channel, 1 x 3 strip of one label, values 0, 1, 3: pairs (0,1), (1,3) -> mean diff^2 2.5;
    # within = mean (x - 4/3)^2 = (16 + 1 + 25) / 27 = 14 / 9; R = 2.5 / (2 * 14 / 9) = 45 / 56
    strip = torch.tensor([[[0.0, 1.0, 3.0]]], dtype=torch.float64)
    assert S.roughness(strip, torch.zeros(1, 3, dtype=torch.long)) == pytest.approx(45 / 56)
    # within-class white noise reads 1; its k x k box average reads about 1 / k; a ramp reads near 0
    lab, clean, noisy = _two_segments(96, 5.0, 8)
    assert S.roughness(noisy, lab) == pytest.approx(1.0, rel=0.05)
    inner = (slice(None), slice(4, -4), slice(4, 44))  # one class, away from the edge and the zero padding
    box = S.box_filter(noisy[None], 5)[0][inner]
    assert S.roughness(box, lab[inner[1:]]) == pytest.approx(1 / 5, rel=0.2)
    ramp = torch.linspace(0, 1, 96, dtype=torch.float64).expand(1, 96, 96).clone()
    assert S.roughness(ramp, torch.zeros(96, 96, dtype=torch.long)) < 0.01
    # blind to scale and to the distance between classes; the ideal smoother lowers it, the identity keeps it
    assert S.roughness(3.0 * noisy, lab) == pytest.approx(S.roughness(noisy, lab), rel=1e-9)
    assert S.roughness(noisy + 4.0 * clean, lab) == pytest.approx(S.roughness(noisy, lab), rel=1e-9)
    assert S.roughness(S.label_box_filter(noisy, lab, 7), lab) < 0.3
    # NaN without within-class spread; shapes checked
    assert math.isnan(S.roughness(clean, lab))
    with pytest.raises(ValueError):
        S.roughness(noisy[0], lab)
