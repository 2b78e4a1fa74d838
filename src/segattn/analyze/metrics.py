"""The measurements of ``segattn analyze`` as pure functions of tensors (no model, no dataset).

Every function states its formula, what it averages over and its unit. Feature maps are (C, H, W)
or (C, N) tensors of one image; label maps are (H, W) int64 with ``ignore_index`` for unlabelled
pixels. All results are Python floats (NaN where the quantity is undefined, never an exception for
a degenerate but valid input such as one class present).
"""

from __future__ import annotations

import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

NAN = float("nan")


def _as_matrix(x: Tensor) -> Tensor:
    """(C, H, W) or (C, N) -> (C, N) float64."""
    if x.dim() == 3:
        x = x.reshape(x.shape[0], -1)
    if x.dim() != 2:
        raise ValueError(f"expected a (C, H, W) or (C, N) feature map, got shape {tuple(x.shape)}")
    return x.detach().to(torch.float64)


# ----------------------------------------------------------------------------------- low rank
def effective_rank(x: Tensor) -> float:
    """Entropy-based effective rank of one image's features (Roy & Vetterli, 2007).

    With ``s_1..s_r`` the singular values of the (C, N) matrix ``x`` (not centred) and
    ``p_i = s_i / sum_j s_j``: ``erank = exp(-sum_i p_i log p_i)``. Dimensionless, between 1 and
    ``min(C, N)``; equal to r for r equal non-zero singular values and never above the rank, so a
    rank-K matrix has ``erank <= K``. An all-zero map has no spectrum: NaN.
    """
    s = torch.linalg.svdvals(_as_matrix(x))
    total = float(s.sum())
    if not math.isfinite(total) or total <= 0:
        return NAN
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


# ------------------------------------------------------------------------------- class geometry
def class_separation(x: Tensor, labels: Tensor, ignore_index: int = 255) -> float:
    """Within-class variance over between-class distance of one image's labelled pixels.

    With ``f_i`` the C-dim feature of labelled pixel i, ``m_c`` the mean of class c's pixels and
    ``n_c`` their count (classes present in the image)::

        W = sum_c sum_{i in c} ||f_i - m_c||^2 / sum_c n_c       (mean squared distance to the own class mean)
        B = mean over class pairs a < b of ||m_a - m_b||^2       (mean squared distance between class means)
        J = W / B

    Dimensionless (both squared feature distances); lower = classes tighter relative to their
    separation. Invariant to a global scale and to orthogonal maps of the features, not to general
    linear maps. NaN with fewer than two classes present or ``B = 0``. ``labels`` must have the
    spatial size of ``x``.
    """
    f = _as_matrix(x)
    lab = labels.reshape(-1).to(f.device)
    if lab.numel() != f.shape[1]:
        raise ValueError(f"labels have {lab.numel()} pixels, features {f.shape[1]}")
    keep = lab != ignore_index
    f, lab = f[:, keep], lab[keep]
    classes = torch.unique(lab)
    if classes.numel() < 2:
        return NAN
    means, within, count = [], 0.0, 0
    for c in classes:
        fc = f[:, lab == c]
        m = fc.mean(1, keepdim=True)
        means.append(m[:, 0])
        within += float(((fc - m) ** 2).sum())
        count += fc.shape[1]
    mu = torch.stack(means)  # (K, C)
    d = torch.cdist(mu, mu) ** 2
    k = mu.shape[0]
    between = float(d.sum()) / (k * (k - 1))
    if between <= 0:
        return NAN
    return (within / count) / between


# --------------------------------------------------------------------------------- noise
def noise_to_signal_gain(clean_in: Tensor, noisy_in: Tensor, clean_out: Tensor, noisy_out: Tensor) -> float:
    """How a map changes the noise-to-signal ratio: ``NSR_out / NSR_in`` (dimensionless).

    ``NSR_in = ||noisy_in - clean_in||^2 / ||clean_in||^2`` and the same for the outputs (squared
    Frobenius norms over all channels and pixels of the tensors given, e.g. a batch). 1 = the noise
    passes as the signal does (the identity, any scaling); below 1 = the map attenuates the noise
    relative to the signal (a k-pixel averaging filter on a constant signal with white noise: 1/k in
    expectation); above 1 = it amplifies it. NaN when a clean tensor is zero.
    """
    def ratio(clean: Tensor, noisy: Tensor) -> float:
        c = clean.detach().to(torch.float64)
        sig = float((c**2).sum())
        return float(((noisy.detach().to(torch.float64) - c) ** 2).sum()) / sig if sig > 0 else NAN

    rin, rout = ratio(clean_in, noisy_in), ratio(clean_out, noisy_out)
    if math.isnan(rin) or math.isnan(rout) or rin == 0:
        return NAN
    return rout / rin


# --------------------------------------------------------------------------------- bases
def mean_pairwise_cosine(bases: Tensor) -> float:
    """Mean cosine similarity over distinct pairs of the K columns of ``bases`` (C, K).

    ``mean_{k < l} <b_k, b_l> / (||b_k|| ||b_l||)``, dimensionless in [-1, 1]: 1 for identical
    (or parallel) bases, 0 for orthogonal ones. Zero columns are left out; NaN with fewer than two.
    """
    b = _as_matrix(bases)
    norms = b.norm(dim=0)
    b = b[:, norms > 0] / norms[norms > 0]
    k = b.shape[1]
    if k < 2:
        return NAN
    g = b.transpose(0, 1) @ b
    return float((g.sum() - g.diagonal().sum()) / (k * (k - 1)))


def reconstruction_error(features: Tensor, reconstruction: Tensor) -> float:
    """Relative error of a module's reconstruction, up to the best global scale (dimensionless, [0, 1]).

    ``e = min_s ||F - s R||^2 / ||F||^2 = 1 - <F, R>^2 / (||F||^2 ||R||^2)`` with ``F`` the features
    the bases live in and ``R`` their reconstruction from the bases (both (C, N), Frobenius inner
    product over channels and pixels). The scale is free because EMA's bases are l2-normalised while
    the features are not. 0 = ``R`` proportional to ``F``; 1 = orthogonal. NaN for a zero input.
    """
    f, r = _as_matrix(features), _as_matrix(reconstruction)
    if f.shape != r.shape:
        raise ValueError(f"features {tuple(f.shape)} and reconstruction {tuple(r.shape)} differ in shape")
    ff, rr = float((f * f).sum()), float((r * r).sum())
    if ff <= 0 or rr <= 0:
        return NAN
    return max(0.0, 1.0 - float((f * r).sum()) ** 2 / (ff * rr))


# ---------------------------------------------------------------------------- attention maps
def total_variation_distance(p: Tensor, q: Tensor) -> float:
    """``TV(p, q) = 1/2 sum_j |p_j - q_j|`` of two attention maps (probability vectors over pixels).

    Dimensionless in [0, 1]: 0 for identical maps, 1 for maps with disjoint support.
    """
    return 0.5 * float((p.detach().to(torch.float64).reshape(-1) - q.detach().to(torch.float64).reshape(-1)).abs().sum())


def mean_pairwise_tv(rows: Tensor) -> float:
    """Mean :func:`total_variation_distance` over all distinct pairs of the Q rows of ``rows`` (Q, N)."""
    r = rows.detach().to(torch.float64)
    q = r.shape[0]
    if q < 2:
        return NAN
    d = 0.5 * torch.cdist(r, r, p=1.0)
    return float(d.sum() / (q * (q - 1)))


def entropy_ratio(z: Tensor, dim: int = -1) -> float:
    """Mean normalised entropy of probability vectors along ``dim``: ``mean H(z) / log K``.

    ``H(z) = -sum_k z_k log z_k`` (0 log 0 = 0), averaged over all other positions (pixels);
    dimensionless in [0, 1]: 1 = uniform (soft) responsibilities, 0 = one-hot (hard) ones.
    """
    z = z.detach().to(torch.float64)
    k = z.shape[dim]
    if k < 2:
        return NAN
    h = -(z * torch.where(z > 0, z.log(), torch.zeros_like(z))).sum(dim)
    return float(h.mean() / math.log(k))


# ----------------------------------------------------------------------------- segments
def connected_components(mask: Tensor) -> Tensor:
    """4-connected components of a boolean (H, W) mask: int64 labels, 0 outside, 1.. inside.

    Union-find on the flat pixel indices, vectorised: each round hooks the root of the larger index of
    every mask edge whose ends have different roots onto the smaller root, then pointer jumping makes
    every pixel point at its root. A component's root is its smallest flat index (pointers only go
    down), so numbering the roots in increasing order numbers the components 1..n in raster order of
    their first pixel. Rounds grow like log(n) where propagating labels to a fixed point needs as many
    rounds as the longest path in a component (thousands for a winding road of a 360x480 image).
    """
    m = mask.bool()
    h, w = m.shape
    flat = m.reshape(-1)
    idx = torch.arange(h * w, dtype=torch.int64)
    grid = idx.reshape(h, w)
    right = m[:, :-1] & m[:, 1:]
    down = m[:-1, :] & m[1:, :]
    a = torch.cat([grid[:, :-1][right], grid[:-1, :][down]])
    b = torch.cat([grid[:, 1:][right], grid[1:, :][down]])
    parent = idx.clone()
    while True:
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not bool(differ.any()):
            break
        lo, hi = torch.minimum(ra, rb)[differ], torch.maximum(ra, rb)[differ]
        parent.scatter_reduce_(0, hi, lo, reduce="amin")
        while True:
            jumped = parent[parent]
            if torch.equal(jumped, parent):
                break
            parent = jumped
    out = torch.zeros(h * w, dtype=torch.int64)
    if bool(flat.any()):
        out[flat] = torch.unique(parent[flat], return_inverse=True)[1] + 1
    return out.reshape(h, w)


def class_segments(target: Tensor, ignore_index: int = 255,
                   classes: Optional[Sequence[int]] = None) -> Iterator[Tuple[int, Tensor, Tensor]]:
    """Per class present in ``target`` (not ``ignore_index``; only ``classes`` if given) that has a
    segment: ``(class, components, area)``, the (H, W) 4-connected component labels of the class (0
    outside, 1..n inside) and the (n + 1,) pixel count of each label (``area[0]`` counts the rest)."""
    for c in torch.unique(target).tolist():
        if c == ignore_index or (classes is not None and c not in classes):
            continue
        comp = connected_components(target == c)
        n = int(comp.max())
        if n > 0:
            yield int(c), comp, torch.bincount(comp.reshape(-1), minlength=n + 1)


def segment_records(pred: Tensor, target: Tensor, ignore_index: int = 255,
                    classes: Optional[Sequence[int]] = None) -> List[Dict[str, float]]:
    """One record per ground-truth segment (4-connected component of one class) of one image.

    Each record: ``class``, ``area`` (pixels) and ``correct`` (pixels of the segment predicted as
    its class). ``classes`` restricts the segments to those classes (e.g. everything but background).
    """
    records = []
    for c, comp, area in class_segments(target, ignore_index, classes):
        good = torch.bincount(comp[pred == c].reshape(-1), minlength=area.numel())[1:]
        records += [{"class": c, "area": int(a), "correct": int(g)} for a, g in zip(area[1:].tolist(), good.tolist())]
    return records


def accuracy_by_area(records: Sequence[Dict[str, float]], edges: Sequence[float]) -> List[float]:
    """Pixel accuracy of the segments in each area bin, in percent.

    Bin b holds the segments with ``edges[b] <= area < edges[b + 1]``; its accuracy is
    ``100 * sum correct / sum area`` over those segments (pixel-weighted; NaN for an empty bin).
    """
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = [r for r in records if lo <= r["area"] < hi]
        area = sum(r["area"] for r in sel)
        out.append(100.0 * sum(r["correct"] for r in sel) / area if area else NAN)
    return out


__all__ = ["effective_rank", "class_separation", "noise_to_signal_gain", "mean_pairwise_cosine",
           "reconstruction_error", "total_variation_distance", "mean_pairwise_tv", "entropy_ratio",
           "connected_components", "segment_records", "accuracy_by_area"]
