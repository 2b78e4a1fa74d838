"""Statistics of `segattn compare` against values computed by hand or taken from tables."""

import math

import numpy as np
import pytest

from segattn.compare.stats import (
    bootstrap_diff,
    miou_from_counts,
    paired,
    summarize,
    t_cdf,
    t_quantile,
    verdict,
)


@pytest.mark.parametrize("df, q", [(1, 12.7062047), (2, 4.3026527), (3, 3.1824463), (4, 2.7764451),
                                   (9, 2.2621572), (30, 2.0422725), (1000, 1.9623391)])
def test_t_quantile_matches_the_table(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-6)
    assert t_cdf(q, df) == pytest.approx(0.975, abs=1e-7)  # the table has 7 decimals
    assert t_quantile(0.025, df) == pytest.approx(-q, abs=1e-6)


def test_summarize_by_hand():
    x = [70.0, 74.0, 72.5]
    m = (70.0 + 74.0 + 72.5) / 3
    sd = math.sqrt(((70 - m) ** 2 + (74 - m) ** 2 + (72.5 - m) ** 2) / 2)
    s = summarize(x)
    assert s["n"] == 3 and s["mean"] == pytest.approx(m) and s["std"] == pytest.approx(sd)
    assert s["ci_low"] == pytest.approx(m - 4.3026527 * sd / math.sqrt(3), abs=1e-6)
    assert s["ci_high"] == pytest.approx(m + 4.3026527 * sd / math.sqrt(3), abs=1e-6)
    one = summarize([5.0])
    assert one["mean"] == 5.0 and math.isnan(one["std"]) and math.isnan(one["ci_low"])
    assert summarize([])["n"] == 0


def test_paired_by_hand():
    a, b = [80.0, 82.0, 79.0], [78.0, 79.0, 78.5]
    d = [2.0, 3.0, 0.5]
    m = sum(d) / 3
    sd = math.sqrt(sum((v - m) ** 2 for v in d) / 2)
    out = paired(a, b)
    assert out["mean"] == pytest.approx(m) and out["std"] == pytest.approx(sd)
    t = m / (sd / math.sqrt(3))
    assert out["t"] == pytest.approx(t)
    # two-sided p of t with 2 df: closed form 1 - t / sqrt(2 + t^2)
    assert out["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-9)
    with pytest.raises(ValueError):
        paired([1.0], [1.0, 2.0])


def test_miou_from_counts_skips_empty_classes():
    tp = np.array([5.0, 0.0, 2.0])
    gt = np.array([10.0, 0.0, 4.0])
    pr = np.array([6.0, 0.0, 2.0])
    assert miou_from_counts(tp, gt, pr) == pytest.approx((5 / 11 + 2 / 4) / 2)


def _counts(rng, n_img=20, k=3):
    gt = rng.integers(10, 50, size=(n_img, k))
    tp = (gt * rng.uniform(0.3, 1.0, size=(n_img, k))).astype(np.int64)
    pred = tp + rng.integers(0, 10, size=(n_img, k))
    return {"tp": tp, "gt": gt, "pred": pred}


def test_bootstrap_is_zero_for_identical_runs_and_covers_the_observed_difference():
    rng = np.random.default_rng(0)
    a = [_counts(rng) for _ in range(2)]
    same = bootstrap_diff(a, a, resamples=200)
    assert same["low"] == 0.0 and same["high"] == 0.0
    b = [_counts(rng) for _ in range(2)]
    out = bootstrap_diff(a, b, resamples=500, seed=1)
    observed = np.mean([miou_from_counts(*(x[k].sum(0) for k in ("tp", "gt", "pred")))
                        - miou_from_counts(*(y[k].sum(0) for k in ("tp", "gt", "pred"))) for x, y in zip(a, b)]) * 100
    assert out["low"] <= observed <= out["high"]
    assert bootstrap_diff(a, b, resamples=500, seed=1) == out  # seeded: reproducible


@pytest.mark.parametrize("kind, lo, hi, expected", [
    ("better", 0.5, 3.0, "holds"), ("better", -2.0, 0.9, "does not hold"), ("better", -1.0, 3.0, "cannot tell"),
    ("no_gain", -3.0, 0.9, "holds"), ("no_gain", 0.2, 0.8, "holds"), ("no_gain", 0.5, 4.0, "does not hold"),
    ("no_gain", -1.0, 2.0, "cannot tell"),
    ("equivalent", -0.8, 0.9, "holds"), ("equivalent", 1.5, 4.0, "does not hold"),
    ("equivalent", -4.0, -1.2, "does not hold"), ("equivalent", -0.5, 1.5, "cannot tell"),
    ("not_worse", -0.9, 2.0, "holds"), ("not_worse", -3.0, -1.1, "does not hold"),
    ("not_worse", -2.0, 0.5, "cannot tell"),
    ("better", math.nan, math.nan, "cannot tell"),
])
def test_verdicts(kind, lo, hi, expected):
    assert verdict(kind, {"ci_low": lo, "ci_high": hi}, margin=1.0) == expected
