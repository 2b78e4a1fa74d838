"""Statistics of a comparison: spread over seeds, paired differences, a bootstrap over images.

Definitions (``x_1..x_n`` the per-seed values of one entry, ``d_s = a_s - b_s`` paired by seed):

* mean ``m = sum x / n``; sample standard deviation ``s = sqrt(sum (x - m)^2 / (n - 1))`` (n >= 2);
* 95 % t-interval ``m -+ t_{0.975, n-1} s / sqrt(n)`` (undefined, NaN, for n < 2);
* paired difference: the same on ``d``; the two-sided p-value of the paired t-test
  ``t = mean(d) / (sd(d) / sqrt(n))`` with n - 1 degrees of freedom;
* bootstrap over validation images: resample the images with replacement (the same images for both
  entries and every seed), recompute each run's dataset-level mIoU from its per-image intersection
  and union counts, average the per-seed differences; the 2.5 / 97.5 % percentiles of that
  difference over the resamples are the interval. It measures how much the difference depends on
  which images were in the validation set; the t-interval measures how much it depends on training
  randomness. Verdicts use the t-interval (it is the one that says whether a module is better).

Student-t quantiles come from the regularised incomplete beta function (continued fraction,
Numerical Recipes 6.4) inverted by bisection, so nothing beyond numpy is needed.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np

NAN = float("nan")


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbeta) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t with ``df`` degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Inverse CDF of Student's t (bisection on :func:`t_cdf`, to 1e-10)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10:
            break
    return 0.5 * (lo + hi)


def summarize(values: Sequence[float], level: float = 0.95) -> Dict[str, float]:
    """``n``, ``mean``, ``std`` (n - 1), ``ci_low``/``ci_high`` (t-interval), ``half_width``."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return {"n": 0, "mean": NAN, "std": NAN, "ci_low": NAN, "ci_high": NAN, "half_width": NAN}
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "std": NAN, "ci_low": NAN, "ci_high": NAN, "half_width": NAN}
    std = float(x.std(ddof=1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "half_width": half}


def paired(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Dict[str, float]:
    """Paired difference ``a - b`` (same seeds): :func:`summarize` of the differences plus ``t`` and ``p``."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    d = [float(x) - float(y) for x, y in zip(a, b)]
    out = summarize(d, level)
    n, std = out["n"], out["std"]
    if n >= 2 and std > 0:
        t = out["mean"] / (std / math.sqrt(n))
        out["t"], out["p"] = t, 2.0 * (1.0 - t_cdf(abs(t), n - 1))
    elif n >= 2:  # identical differences: exact, no spread
        out["t"], out["p"] = (math.inf if out["mean"] else 0.0), (0.0 if out["mean"] else 1.0)
    else:
        out["t"], out["p"] = NAN, NAN
    return out


def miou_from_counts(tp: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """mIoU over the last axis (classes) from summed counts; classes with an empty union are skipped."""
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    valid = ~np.isnan(iou)
    total = np.where(valid, iou, 0.0).sum(-1)
    count = valid.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def bootstrap_diff(a_counts: List[Dict[str, np.ndarray]], b_counts: List[Dict[str, np.ndarray]],
                   resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Dict[str, float]:
    """Bootstrap interval of mean-over-seeds ``mIoU(a) - mIoU(b)`` (percentage points) over images.

    ``a_counts[s]`` holds per-image arrays ``tp``, ``gt``, ``pred`` of shape (images, classes) for
    seed s of entry a (same for b, same images in the same order).
    """
    if not a_counts or len(a_counts) != len(b_counts):
        return {"low": NAN, "high": NAN, "resamples": 0}
    n_img = a_counts[0]["tp"].shape[0]
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_img, np.full(n_img, 1.0 / n_img), size=resamples).astype(np.float64)  # (R, I)

    def resampled_miou(counts: Dict[str, np.ndarray]) -> np.ndarray:
        tp, gt, pr = (weights @ counts[k].astype(np.float64) for k in ("tp", "gt", "pred"))  # (R, K)
        return miou_from_counts(tp, gt, pr)

    diffs = np.mean([resampled_miou(a) - resampled_miou(b) for a, b in zip(a_counts, b_counts)], axis=0) * 100.0
    diffs = diffs[~np.isnan(diffs)]
    if diffs.size == 0:
        return {"low": NAN, "high": NAN, "resamples": 0}
    tail = (1.0 - level) / 2.0 * 100.0
    return {"low": float(np.percentile(diffs, tail)), "high": float(np.percentile(diffs, 100.0 - tail)),
            "resamples": int(resamples)}


def verdict(kind: str, diff: Dict[str, float], margin: float) -> Optional[str]:
    """``holds`` / ``does not hold`` / ``cannot tell`` for one paired difference ``a - b`` (points).

    * ``better`` (a beats b): holds if the interval lies above 0; does not hold if it lies below
      ``margin`` (any gain is smaller than the margin, or a is worse); else cannot tell.
    * ``no_gain`` (a adds nothing over b): holds if the interval lies below ``margin``; does not hold
      if it lies above 0 (checked in that order: a significant but negligible gain still holds).
    * ``not_worse`` (a loses less than the margin to b): holds if the interval lies above
      ``-margin``; does not hold if it lies below ``-margin``.
    * ``equivalent``: holds if the interval lies inside (-margin, margin); does not hold if it lies
      entirely outside [-margin, margin]; else cannot tell.
    With fewer than two seeds there is no interval: cannot tell.
    """
    lo, hi = diff.get("ci_low", NAN), diff.get("ci_high", NAN)
    if math.isnan(lo) or math.isnan(hi):
        return "cannot tell"
    if kind == "better":
        return "holds" if lo > 0 else "does not hold" if hi < margin else "cannot tell"
    if kind == "no_gain":
        return "holds" if hi < margin else "does not hold" if lo > 0 else "cannot tell"
    if kind == "not_worse":
        return "holds" if lo > -margin else "does not hold" if hi < -margin else "cannot tell"
    if kind == "equivalent":
        if -margin < lo and hi < margin:
            return "holds"
        return "does not hold" if (lo > margin or hi < -margin) else "cannot tell"
    raise ValueError(f"unknown claim kind {kind!r}")
