"""Statistics of `segattn compare` and `segattn analyze`: intervals, tests, multiplicity and verdicts.

Everything that has a library implementation comes from :mod:`scipy.stats` (Student's t, the paired
t-test, the exact sign-flip permutation test, Fisher's exact test); the Holm step-down adjustment
(ten lines, not in scipy) and the bootstrap over validation images are written here.

Definitions (``x_1..x_n`` the per-seed values of one entry, ``d_s = a_s - b_s`` paired by seed):

* mean ``m``, sample standard deviation ``s`` (``n - 1``), 95 % t-interval ``m -+ t_{0.975, n-1} s / sqrt(n)``
  (NaN for n < 2);
* every claim is reduced to one or two **one-sided tests** "the mean of ``x`` exceeds ``null``"
  (:func:`one_sided`): ``p_t`` from the one-sample t-test, ``p_perm`` from the exact sign-flip
  permutation test of ``x - null`` (all ``2^n`` sign patterns for n <= 16);
* a report's claims form one **family**: their ``p_t`` are Holm-adjusted together (:func:`holm`);
* a test **holds** when its Holm-adjusted ``p_t`` and its (raw, exact) ``p_perm`` are both below
  :data:`ALPHA` = 0.025 (one-sided, the level of the 95 % two-sided interval); it **does not hold**
  when the 95 % interval of ``x`` lies entirely below ``null``; anything else is **cannot tell**.
  A holding test has its interval above the null (the raw one-sided p is below 0.025), a refuted one
  below it: while the interval straddles the null the verdict is *cannot tell*, never a jump.

The exact permutation p-value is at least ``1 / 2^n``, so *holds* needs ``2^-n < 0.025``: at least
:data:`MIN_SEEDS` = 6 seeds. Published plans use :data:`PUBLISHED_SEEDS` = 8 (minimum ``p_perm`` =
1/256 one-sided, 2/256 two-sided). The per-claim-kind rules are in ``docs/compare.md``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

NAN = float("nan")
ALPHA = 0.025          # one-sided level of every test (= the 95 % two-sided interval)
LEVEL = 0.95           # the interval shown beside every difference
MIN_SEEDS = 6          # smallest n with an exact sign-flip p-value 2^-n below ALPHA
PUBLISHED_SEEDS = 8    # the seed count of published plans
EXACT_UP_TO = 16       # sign flips enumerated exactly up to this many values (65536 patterns)
VERDICTS = ("holds", "does not hold", "cannot tell")


def _clean(values: Sequence[Any]) -> np.ndarray:
    return np.asarray([float(v) for v in values if v is not None and not math.isnan(float(v))], dtype=np.float64)


def summarize(values: Sequence[Any], level: float = LEVEL) -> Dict[str, float]:
    """``n``, ``mean``, ``std`` (n - 1), ``ci_low``/``ci_high`` (t-interval), ``half_width`` (NaNs dropped)."""
    from scipy import stats

    x = _clean(values)
    n = int(x.size)
    if n == 0:
        return {"n": 0, "mean": NAN, "std": NAN, "ci_low": NAN, "ci_high": NAN, "half_width": NAN}
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "std": NAN, "ci_low": NAN, "ci_high": NAN, "half_width": NAN}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2.0, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "half_width": half}


def t_test_greater(x: Sequence[float], null: float = 0.0) -> float:
    """One-sided p of the one-sample t-test, H1: mean(x) > null (scipy); exact 0 / 1 for no spread."""
    from scipy import stats

    v = _clean(x)
    if v.size < 2:
        return NAN
    if float(v.std(ddof=1)) <= 1e-12 * max(1.0, abs(float(v.mean()))):  # identical up to rounding: the sign decides
        return 0.0 if float(v.mean()) > null else 1.0
    return float(stats.ttest_1samp(v, null, alternative="greater").pvalue)


def sign_flip_greater(x: Sequence[float], null: float = 0.0, seed: int = 0) -> float:
    """One-sided p of the paired sign-flip permutation test of ``x - null`` (H1: mean > null).

    Exact (every one of the ``2^n`` sign patterns, the observed one included) for n <= 16, else 65536
    random patterns from ``seed``; uses :func:`scipy.stats.permutation_test`.
    """
    from scipy import stats

    v = _clean(x) - null
    if v.size < 2:
        return NAN
    resamples = np.inf if v.size <= EXACT_UP_TO else 2 ** EXACT_UP_TO
    res = stats.permutation_test((v,), lambda a, axis=-1: np.mean(a, axis=axis), permutation_type="samples",
                                 n_resamples=resamples, alternative="greater", vectorized=True,
                                 random_state=np.random.default_rng(seed))
    return float(res.pvalue)


def one_sided(x: Sequence[float], null: float = 0.0, level: float = LEVEL) -> Dict[str, Any]:
    """One test "mean(x) > null": the summary of ``x``, ``null``, ``p_t``, ``p_perm`` and ``refuted``
    (the ``level`` interval of ``x`` lies entirely below ``null``)."""
    s = summarize(x, level)
    refuted = bool(s["n"] >= 2 and s["ci_high"] < null)
    return {**s, "null": float(null), "p_t": t_test_greater(x, null), "p_perm": sign_flip_greater(x, null),
            "refuted": refuted}


def paired(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Dict[str, float]:
    """Paired difference ``a - b`` (same seeds): :func:`summarize` of the differences plus the two-sided
    paired t-test (``t``, ``p``, from scipy)."""
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    d = [float(x) - float(y) for x, y in zip(a, b)]
    out: Dict[str, Any] = dict(summarize(d, level))
    n, std = out["n"], out["std"]
    if n >= 2 and std > 1e-12 * max(1.0, abs(out["mean"])):
        res = stats.ttest_1samp(_clean(d), 0.0)
        out["t"], out["p"] = float(res.statistic), float(res.pvalue)
    elif n >= 2:  # identical differences: exact, no spread
        out["t"], out["p"] = (math.inf if out["mean"] else 0.0), (0.0 if out["mean"] else 1.0)
    else:
        out["t"], out["p"] = NAN, NAN
    return out


def holm(pvalues: Sequence[float]) -> List[float]:
    """Holm's step-down adjustment of a family of p-values (NaNs are left out of the family, kept NaN).

    Sorted ascending ``p_(1) <= ... <= p_(m)``: ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``.
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    out = [NAN] * len(pvalues)
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda k: pvalues[k])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def fisher_greater(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    """One-sided Fisher exact p that ``a``'s rate ``k_a / n_a`` exceeds ``b``'s (scipy)."""
    from scipy import stats

    if n_a < 1 or n_b < 1:
        return NAN
    table = [[k_a, n_a - k_a], [k_b, n_b - k_b]]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)


def fisher_test(k_a: int, n_a: int, k_b: int, n_b: int) -> Dict[str, Any]:
    """Test "a's rate is lower than b's" (``fewer_collapses``): ``p_t`` = ``p_perm`` = Fisher's one-sided
    p (an exact test: it serves as both); refuted when the opposite one-sided p is below :data:`ALPHA`."""
    p = fisher_greater(k_b, n_b, k_a, n_a)
    p_rev = fisher_greater(k_a, n_a, k_b, n_b)
    return {"n": n_a + n_b, "a_count": k_a, "a_runs": n_a, "b_count": k_b, "b_runs": n_b, "p_t": p, "p_perm": p,
            "refuted": bool(not math.isnan(p_rev) and p_rev < ALPHA)}


def decide(tests: Sequence[Dict[str, Any]], alpha: float = ALPHA) -> List[Dict[str, Any]]:
    """Holm-adjust the ``p_t`` of a family of tests (in place: ``p_t_adj``) and give each its verdict.

    ``tests`` are the dicts of :func:`one_sided` / :func:`fisher_test` (or :func:`combine_all` of
    several); a test holds when ``p_t_adj < alpha`` and ``p_perm < alpha``; does not hold when
    ``refuted``; else cannot tell.
    """
    adjusted = holm([t.get("p_t", NAN) for t in tests])
    for t, adj in zip(tests, adjusted):
        t["p_t_adj"] = adj
        t["verdict"] = test_verdict(t, alpha)
    return list(tests)


def test_verdict(t: Dict[str, Any], alpha: float = ALPHA) -> str:
    """The verdict of one test once ``p_t_adj`` is set (see :func:`decide`)."""
    adj, perm = t.get("p_t_adj", NAN), t.get("p_perm", NAN)
    if not (math.isnan(adj) or math.isnan(perm)) and adj < alpha and perm < alpha:
        return "holds"
    return "does not hold" if t.get("refuted") else "cannot tell"


def combine_all(parts: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """An intersection of one-sided tests (TOST): holds only if every part does, so ``p_t`` and
    ``p_perm`` are the largest of the parts'; refuted if any part is."""
    def worst(key: str) -> float:
        vals = [p[key] for p in parts]
        return NAN if any(math.isnan(v) for v in vals) else max(vals)

    return {"p_t": worst("p_t"), "p_perm": worst("p_perm"), "refuted": any(p["refuted"] for p in parts),
            "parts": list(parts)}


def overall(verdicts: Sequence[str]) -> str:
    """A claim made of several tests (every pair of an ``equivalent`` claim): does not hold if any does
    not, holds if all hold, else cannot tell."""
    if "does not hold" in verdicts:
        return "does not hold"
    return "holds" if verdicts and all(v == "holds" for v in verdicts) else "cannot tell"


def agree(first: Optional[str], second: Optional[str]) -> str:
    """Replication status of a verdict judged on two disjoint seed ranges: ``replicated`` only when both
    decide it the same way (two *cannot tell* are ``undecided in both``, not a replication)."""
    if first is None or second is None:
        return "not replicated yet"
    if first == second == "cannot tell":
        return "undecided in both"
    return "replicated" if first == second else "not replicated"


def collapsed(scores: Dict[str, Dict[int, float]], reference: str) -> Dict[str, List[int]]:
    """Seeds whose run *collapsed*: its score is at or below the best run of the no-context
    ``reference`` entry although its own entry's median is above that best run (an entry that usually
    sits in the baseline's range is not collapsing, it just does not beat the baseline).

    ``scores`` maps entry -> seed -> score (NaN: unknown); the reference itself never collapses.
    """
    ref = [v for v in scores.get(reference, {}).values() if not math.isnan(v)]
    out: Dict[str, List[int]] = {name: [] for name in scores}
    if not ref:
        return out
    ceiling = max(ref)
    for name, runs in scores.items():
        finite = sorted(v for v in runs.values() if not math.isnan(v))
        if name == reference or not finite or float(np.median(finite)) <= ceiling:
            continue
        out[name] = sorted(s for s, v in runs.items() if v <= ceiling)
    return out


# ------------------------------------------------------------------------------ bootstrap over images
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
                   resamples: int = 2000, seed: int = 0, level: float = LEVEL) -> Dict[str, float]:
    """Bootstrap interval of mean-over-seeds ``mIoU(a) - mIoU(b)`` (percentage points) over images.

    ``a_counts[s]`` holds per-image arrays ``tp``, ``gt``, ``pred`` of shape (images, classes) for
    seed s of entry a (same for b, same images in the same order). The same resampled images serve
    both entries and every seed; the percentiles of the resampled difference are the interval. It
    says how much a difference depends on which images were scored, not on training randomness.
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


__all__ = ["ALPHA", "LEVEL", "MIN_SEEDS", "PUBLISHED_SEEDS", "VERDICTS", "summarize", "t_test_greater",
           "sign_flip_greater", "one_sided", "paired", "holm", "fisher_greater", "fisher_test", "decide",
           "test_verdict", "combine_all", "overall", "agree", "collapsed", "miou_from_counts", "bootstrap_diff"]
