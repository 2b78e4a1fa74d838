"""Metrics that test the survey's explanations themselves (issue 30), as pure functions of tensors.

:mod:`segattn.analyze.metrics` holds the first round of proxies; this file holds the metrics that
test each statement directly, each with its control or its invariance stated:

* low rank + "easier to classify": :func:`fisher_ratio` (LDA criterion, invariant to every invertible
  linear map of the features, so a reconstruction and the input it came from are comparable);
* denoising: :func:`noise_gain` against :func:`signal_gain` (centred), :func:`denoising_index`, with
  :func:`box_filter` and the identity as controls;
* edge-preserving smoothing: :func:`variance_split` (within- and between-class variance, summing to
  the total) and :func:`boundary_contrast`;
* bases: :func:`centred_cosine`, :func:`relative_cosine`, :func:`gram_erank_fraction`,
  :func:`masked_reconstruction_error`;
* information flow: :func:`counterfactual_change`.

Feature maps are (C, H, W) or (C, N) tensors of one image; labels (H, W) or (N,) int64 with
``ignore_index`` for unlabelled pixels. Results are floats, NaN where the quantity is undefined.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from segattn.analyze.metrics import _as_matrix

NAN = float("nan")


def _labelled(x: Tensor, labels: Tensor, ignore_index: int) -> Tuple[Tensor, Tensor]:
    f = _as_matrix(x)
    lab = labels.reshape(-1).to(f.device)
    if lab.numel() != f.shape[1]:
        raise ValueError(f"labels have {lab.numel()} pixels, features {f.shape[1]}")
    keep = lab != ignore_index
    return f[:, keep], lab[keep]


# ------------------------------------------------------------------------- low rank: classifiability
def fisher_ratio(x: Tensor, labels: Tensor, ignore_index: int = 255, ridge: float = 1e-6) -> float:
    """LDA Fisher criterion of the labelled pixels: ``tr((S_W + eps I)^-1 S_B)`` (dimensionless, >= 0).

    ``S_W = (1/N) sum_c sum_{i in c} (f_i - m_c)(f_i - m_c)^T`` (pooled within-class covariance),
    ``S_B = sum_c (n_c / N) (m_c - m)(m_c - m)^T`` (between-class covariance of the class means around
    the overall mean m), ``eps = ridge * tr(S_W) / C``. It is the summed squared separation of the
    class means along the discriminant directions, in units of the within-class spread there, the
    quantity a linear classifier on these features can exploit: larger = linearly easier to classify.
    Unchanged by any invertible linear map of the channels (up to the ridge), so features in different
    spaces (a module's input and its low-rank reconstruction) are comparable; a map can only lower it
    (rank loss) or raise it by being non-linear. Two classes in one dimension with equal counts:
    ``(Delta / 2)^2 / s^2`` for means ``Delta`` apart and within-class variance ``s^2``.
    NaN with fewer than two classes or zero within-class spread.
    """
    f, lab = _labelled(x, labels, ignore_index)
    classes = torch.unique(lab)
    if classes.numel() < 2:
        return NAN
    n, c = f.shape[1], f.shape[0]
    m = f.mean(1, keepdim=True)
    sw = torch.zeros(c, c, dtype=f.dtype)
    sb = torch.zeros(c, c, dtype=f.dtype)
    for k in classes:
        fk = f[:, lab == k]
        mk = fk.mean(1, keepdim=True)
        d = fk - mk
        sw += d @ d.T
        sb += fk.shape[1] * (mk - m) @ (mk - m).T
    sw, sb = sw / n, sb / n
    tr = float(torch.trace(sw))
    if not math.isfinite(tr) or tr <= 0:
        return NAN
    eye = torch.eye(c, dtype=f.dtype)
    return float(torch.trace(torch.linalg.solve(sw + ridge * tr / c * eye, sb)))


# ---------------------------------------------------------------------------------------- denoising
def noise_gain(clean_out: Tensor, noisy_out: Tensor, noise: Tensor) -> float:
    """Share of input noise energy a map passes: ``||f(r + n) - f(r)||^2 / ||n||^2`` (ratio).

    Squared Frobenius norms over everything given (channels, pixels, batch). The identity: exactly 1;
    any map that adds something independent of its input (GCNet's per-image vector, a concatenated
    pooled branch) passes the noise of its input part unchanged; a k x k box filter on white noise:
    ``1/k^2`` (every output averages ``k^2`` independent values). NaN for zero noise."""
    nn_ = float((noise.detach().double() ** 2).sum())
    if nn_ <= 0:
        return NAN
    return float(((noisy_out.detach().double() - clean_out.detach().double()) ** 2).sum()) / nn_


def _centred(x: Tensor) -> Tensor:
    """Spatially centred per channel (and per image for a (B, C, H, W) batch), float64."""
    x = x.detach().double()
    flat = x.flatten(-2) if x.dim() >= 3 else x
    return flat - flat.mean(-1, keepdim=True)


def signal_gain(clean_in: Tensor, clean_out: Tensor) -> float:
    """Energy gain of the signal's spatial variation: ``||f(r) - mean f(r)||^2 / ||r - mean r||^2``.

    Means over the pixels of each channel of each image, so a per-image constant (GCNet's added
    vector, a bias) counts as no signal: it carries no spatial information and cannot stand in for
    passed signal. The identity: 1. NaN for a spatially constant input."""
    d = float((_centred(clean_in) ** 2).sum())
    return float((_centred(clean_out) ** 2).sum()) / d if d > 0 else NAN


def denoising_index(clean_in: Tensor, clean_out: Tensor, noisy_out: Tensor, noise: Tensor) -> float:
    """:func:`noise_gain` / :func:`signal_gain` (ratio): below 1 = the map passes less of the noise than of
    the (centred) signal, i.e. it denoises; 1 = the identity or any scaling; about ``1/k^2`` for a
    k x k box filter on a smooth signal in white noise. NaN where either gain is."""
    ng, sg = noise_gain(clean_out, noisy_out, noise), signal_gain(clean_in, clean_out)
    if math.isnan(ng) or math.isnan(sg) or sg <= 0:
        return NAN
    return ng / sg


def box_filter(x: Tensor, k: int) -> Tensor:
    """The control smoother: a k x k mean filter per channel of (B, C, H, W) ``x`` (reflect padding
    where the map allows it, else replicate; odd ``k``), same size as ``x``."""
    if k % 2 != 1 or k < 1:
        raise ValueError(f"box filter size must be an odd positive integer, got {k}")
    if k == 1:
        return x
    p = k // 2
    mode = "reflect" if min(x.shape[-2:]) > p else "replicate"
    return F.avg_pool2d(F.pad(x, (p, p, p, p), mode=mode), k, stride=1)


# ---------------------------------------------------------------------------------------- smoothing
def label_box_filter(x: Tensor, labels: Tensor, k: int, ignore_index: int = 255) -> Tensor:
    """The ideal edge-preserving smoother (a positive control): each pixel of (C, H, W) ``x`` replaced by
    the mean of the pixels of its own label in its k x k window (zero padding: the window is cut at the
    border), so nothing is averaged across a label edge; pixels labelled ``ignore_index`` keep their
    value. Two segments of constant values stay exactly as they are; noise inside a segment is averaged."""
    if k % 2 != 1 or k < 1:
        raise ValueError(f"label box filter size must be an odd positive integer, got {k}")
    if x.dim() != 3 or labels.shape != x.shape[-2:]:
        raise ValueError(f"label_box_filter needs (C, H, W) features and (H, W) labels, got "
                         f"{tuple(x.shape)} and {tuple(labels.shape)}")
    out = x.clone()
    p = k // 2
    for c in torch.unique(labels).tolist():
        if c == ignore_index:
            continue
        m = (labels == c).to(x.dtype)[None, None]
        num = F.avg_pool2d(F.pad(x[None] * m, (p, p, p, p)), k, stride=1)
        den = F.avg_pool2d(F.pad(m, (p, p, p, p)), k, stride=1)
        sel = labels == c
        out[:, sel] = (num / den.clamp_min(1e-12))[0][:, sel]
    return out


def variance_split(x: Tensor, labels: Tensor, ignore_index: int = 255) -> Dict[str, float]:
    """Law of total variance over the labelled pixels: ``total = within + between`` (feature units^2).

    ``within = (1/N) sum_c sum_{i in c} ||f_i - m_c||^2``, ``between = (1/N) sum_c n_c ||m_c - m||^2``,
    ``total = (1/N) sum_i ||f_i - m||^2``: all per pixel, in the same units, so dividing two maps'
    values by one common number (the input's total) shows whether a module shrank the within-class
    spread or inflated the distance between classes, which the ratio J = within / between cannot.
    ``between`` is 0 with one class present; all NaN without labelled pixels."""
    f, lab = _labelled(x, labels, ignore_index)
    if f.shape[1] == 0:
        return {"within": NAN, "between": NAN, "total": NAN}
    n = f.shape[1]
    m = f.mean(1, keepdim=True)
    within = between = 0.0
    for k in torch.unique(lab):
        fk = f[:, lab == k]
        mk = fk.mean(1, keepdim=True)
        within += float(((fk - mk) ** 2).sum())
        between += fk.shape[1] * float(((mk - m) ** 2).sum())
    return {"within": within / n, "between": between / n, "total": float(((f - m) ** 2).sum()) / n}


def _neighbour_pairs(x: Tensor, labels: Tensor, ignore_index: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Over the 4-neighbour pairs (i, j) of an (H, W) grid: ``||f_i - f_j||^2`` (float64), whether the two
    labels are equal, and whether both are valid (flat tensors, horizontal pairs first)."""
    f = x.detach().double()
    lab = labels.to(f.device)
    diffs, same, valid = [], [], []
    for a, b, la, lb in ((f[:, :, 1:], f[:, :, :-1], lab[:, 1:], lab[:, :-1]),
                         (f[:, 1:, :], f[:, :-1, :], lab[1:, :], lab[:-1, :])):
        diffs.append(((a - b) ** 2).sum(0).reshape(-1))
        same.append((la == lb).reshape(-1))
        valid.append(((la != ignore_index) & (lb != ignore_index)).reshape(-1))
    return torch.cat(diffs), torch.cat(same), torch.cat(valid)


def boundary_contrast(x: Tensor, labels: Tensor, ignore_index: int = 255) -> float:
    """Feature contrast across label edges relative to inside segments (ratio).

    Over the 4-neighbour pixel pairs (i, j) of an (H, W) grid with both labels valid:
    ``mean_{l_i != l_j} ||f_i - f_j||^2 / mean_{l_i == l_j} ||f_i - f_j||^2``. Edge-preserving smoothing
    raises it (noise inside segments averaged away, the step at the edge kept); a blur across edges
    lowers its numerator. Two constant segments of values a and b in white noise of variance s^2 per
    channel and C channels: ``1 + ||a - b||^2 / (2 C s^2)`` in expectation. ``x`` (C, H, W), labels
    (H, W). NaN when there are no pairs of either kind or the inside differences are all 0."""
    if x.dim() != 3 or labels.shape != x.shape[-2:]:
        raise ValueError(f"boundary_contrast needs (C, H, W) features and (H, W) labels, got "
                         f"{tuple(x.shape)} and {tuple(labels.shape)}")
    d, s, v = _neighbour_pairs(x, labels, ignore_index)
    edge, inside = d[v & ~s], d[v & s]
    if edge.numel() == 0 or inside.numel() == 0 or float(inside.mean()) <= 0:
        return NAN
    return float(edge.mean() / inside.mean())


def roughness(x: Tensor, labels: Tensor, ignore_index: int = 255) -> float:
    """How fast features vary inside a class, relative to how much they vary there (scale-free).

    ``R = mean_{l_i == l_j} ||f_i - f_j||^2 / (2 within)`` over the 4-neighbour pairs (i, j) of an (H, W)
    grid with both labels valid and equal, ``within`` as in :func:`variance_split`. Within-class white
    noise reads 1 in expectation (a neighbour is as far as any pixel of the class); a field that varies
    slowly inside each class reads near 0; a k x k box average of white noise reads about 1 / k. A
    smoother lowers R whatever it does to the distance between classes and to the map's scale, which a
    share of the variance (within / total, a function of J = within / between) cannot tell apart.
    ``x`` (C, H, W), labels (H, W). NaN when there is no within-class pair or no within-class spread."""
    if x.dim() != 3 or labels.shape != x.shape[-2:]:
        raise ValueError(f"roughness needs (C, H, W) features and (H, W) labels, got "
                         f"{tuple(x.shape)} and {tuple(labels.shape)}")
    d, same, valid = _neighbour_pairs(x, labels, ignore_index)
    inside = d[same & valid]
    within = variance_split(x, labels, ignore_index)["within"]
    if inside.numel() == 0 or not within > 0:
        return NAN
    return float(inside.mean()) / (2.0 * within)


# -------------------------------------------------------------------------------------------- bases
def _unit_columns(b: Tensor) -> Tensor:
    norms = b.norm(dim=0)
    return b[:, norms > 0] / norms[norms > 0]


def _mean_offdiag_cosine(b: Tensor) -> float:
    b = _unit_columns(b)
    k = b.shape[1]
    if k < 2:
        return NAN
    g = b.T @ b
    return float((g.sum() - g.diagonal().sum()) / (k * (k - 1)))


def centred_cosine(bases: Tensor, features: Tensor) -> float:
    """Mean pairwise cosine of the K bases (C, K) after subtracting the mean pixel of the feature space
    they live in (``features`` (C, H, W) or (C, N)). A space's common offset (every post-ReLU vector is
    non-negative, so raw cosines there are high whatever the bases) no longer counts as similarity:
    bases drawn as random pixels of a space have a centred cosine near 0 in any space. [-1, 1]."""
    b, f = _as_matrix(bases), _as_matrix(features)
    return _mean_offdiag_cosine(b - f.mean(1, keepdim=True))


def relative_cosine(bases: Tensor, features: Tensor, pairs: int = 2048,
                    generator: Optional[torch.Generator] = None) -> float:
    """Mean pairwise cosine of the bases minus the mean cosine of random pixel pairs of ``features``
    (``pairs`` pairs of distinct pixels drawn with ``generator``), both raw: how much more alike the
    bases are than two pixels of the same space. 0 = as alike as random pixels; positive = bases more
    alike (collapsed); negative = more spread out than the pixels."""
    b, f = _as_matrix(bases), _as_matrix(features)
    f = f[:, f.norm(dim=0) > 0]
    n = f.shape[1]
    if n < 2:
        return NAN
    i = torch.randint(n, (pairs,), generator=generator)
    j = (i + 1 + torch.randint(n - 1, (pairs,), generator=generator)) % n
    fu = f / f.norm(dim=0)
    ref = float((fu[:, i] * fu[:, j]).sum(0).mean())
    return _mean_offdiag_cosine(b) - ref


def gram_erank_fraction(bases: Tensor) -> float:
    """Effective rank of the bases' Gram matrix over K: ``exp(H(lambda / sum lambda)) / K`` with lambda the
    eigenvalues of ``G = B^T B`` of the unit-normalised bases B (C, K). 1 = K orthogonal bases (all
    eigenvalues equal), ``1/K`` = K copies of one basis; in between it counts how many distinct
    directions the K bases span, comparable across K. NaN with no non-zero basis."""
    b = _unit_columns(_as_matrix(bases))
    k = b.shape[1]
    if k == 0:
        return NAN
    lam = torch.linalg.eigvalsh(b.T @ b).clamp_min(0)
    p = lam / lam.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum())) / k


def masked_reconstruction_error(features: Tensor, reconstruction: Tensor, mask: Tensor) -> float:
    """Relative reconstruction error on the pixels of ``mask`` (e.g. small segments), [0, inf).

    The scale ``s = <F, R> / ||R||^2`` is fitted on all pixels (as in
    :func:`segattn.analyze.metrics.reconstruction_error`); then ``e = ||F_m - s R_m||^2 / ||F_m||^2``
    over the masked columns only. 0 = those pixels reconstructed exactly; 1 = reconstructed as 0 (their
    content lost). NaN for an empty mask, a zero reconstruction or zero features there."""
    f, r = _as_matrix(features), _as_matrix(reconstruction)
    if f.shape != r.shape:
        raise ValueError(f"features {tuple(f.shape)} and reconstruction {tuple(r.shape)} differ in shape")
    m = mask.reshape(-1).bool().to(f.device)
    if m.numel() != f.shape[1]:
        raise ValueError(f"mask has {m.numel()} pixels, features {f.shape[1]}")
    rr = float((r * r).sum())
    fm = f[:, m]
    ff = float((fm * fm).sum())
    if not bool(m.any()) or rr <= 0 or ff <= 0:
        return NAN
    s = float((f * r).sum()) / rr
    return float(((fm - s * r[:, m]) ** 2).sum()) / ff


# ------------------------------------------------------------------------------------ information flow
def counterfactual_change(before: Tensor, after: Tensor, mask: Optional[Tensor] = None) -> float:
    """Relative change of a map under an intervention on the input, on the pixels of ``mask``:
    ``||(A - B)_m||^2 / ||B_m||^2`` with B the output before and A after (C, H, W) or (C, N). 0 = the
    masked pixels do not depend on what was changed (no information flowed from there). NaN for an
    empty mask or a zero output there."""
    b, a = _as_matrix(before), _as_matrix(after)
    if a.shape != b.shape:
        raise ValueError(f"outputs {tuple(b.shape)} and {tuple(a.shape)} differ in shape")
    if mask is not None:
        m = mask.reshape(-1).bool().to(b.device)
        b, a = b[:, m], a[:, m]
    bb = float((b * b).sum())
    return float(((a - b) ** 2).sum()) / bb if bb > 0 else NAN


__all__ = ["fisher_ratio", "noise_gain", "signal_gain", "denoising_index", "box_filter", "variance_split",
           "boundary_contrast", "label_box_filter", "centred_cosine", "relative_cosine", "gram_erank_fraction",
           "masked_reconstruction_error", "counterfactual_change"]
