"""`segattn.stats` against values computed by hand, from tables, or by brute force."""

import itertools
import math

import numpy as np
import pytest

from segattn import stats
from segattn.stats import (
    ALPHA,
    MIN_SEEDS,
    bootstrap_diff,
    collapsed,
    decide,
    fisher_test,
    holm,
    miou_from_counts,
    one_sided,
    paired,
    sign_flip_greater,
    summarize,
)

T_975 = {2: 4.3026527, 4: 2.7764451, 7: 2.3646243}  # Student t quantiles from a printed table


def test_summarize_uses_the_t_table():
    x = [70.0, 74.0, 72.5]
    m = (70.0 + 74.0 + 72.5) / 3
    sd = math.sqrt(((70 - m) ** 2 + (74 - m) ** 2 + (72.5 - m) ** 2) / 2)
    s = summarize(x)
    assert s["n"] == 3 and s["mean"] == pytest.approx(m) and s["std"] == pytest.approx(sd)
    assert s["ci_low"] == pytest.approx(m - T_975[2] * sd / math.sqrt(3), abs=1e-6)
    assert s["ci_high"] == pytest.approx(m + T_975[2] * sd / math.sqrt(3), abs=1e-6)
    eight = summarize(list(range(8)))
    assert eight["half_width"] == pytest.approx(T_975[7] * np.std(range(8), ddof=1) / math.sqrt(8), abs=1e-6)
    one = summarize([5.0])
    assert one["mean"] == 5.0 and math.isnan(one["std"]) and math.isnan(one["ci_low"])
    assert summarize([])["n"] == 0


def test_paired_two_sided_p_by_hand():
    a, b = [80.0, 82.0, 79.0], [78.0, 79.0, 78.5]
    d = [2.0, 3.0, 0.5]
    m = sum(d) / 3
    sd = math.sqrt(sum((v - m) ** 2 for v in d) / 2)
    out = paired(a, b)
    t = m / (sd / math.sqrt(3))
    assert out["t"] == pytest.approx(t)
    assert out["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-9)  # closed form, 2 df
    with pytest.raises(ValueError):
        paired([1.0], [1.0, 2.0])


def _brute_sign_flip(x, null=0.0):
    v = np.asarray(x) - null
    obs = v.mean()
    means = [np.mean(v * np.array(s)) for s in itertools.product((1, -1), repeat=len(v))]
    return sum(mu >= obs - 1e-12 for mu in means) / len(means)


@pytest.mark.parametrize("x", [[1.0, 2.0, 3.0, -0.5, 2.0, 1.0, 3.0, 2.0], [0.3, -0.2, 0.1, 0.4, -0.1, 0.2],
                               [5.0, 4.0, 6.0, 5.5, 4.5, 5.0, 6.5, 5.2]])
def test_sign_flip_is_exact(x):
    assert sign_flip_greater(x) == pytest.approx(_brute_sign_flip(x))
    assert sign_flip_greater(x, null=1.0) == pytest.approx(_brute_sign_flip(x, 1.0))


def test_smallest_seed_count_that_can_hold_is_six():
    """All differences positive and large: the t-test is tiny, the permutation p is 2^-n."""
    assert MIN_SEEDS == 6
    for n in (5, 6, 8):
        x = [10.0 + 0.1 * i for i in range(n)]
        t = decide([one_sided(x, 0.0)])[0]
        assert t["p_perm"] == pytest.approx(2.0 ** -n)
        assert t["verdict"] == ("holds" if n >= MIN_SEEDS else "cannot tell")


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005, math.nan]
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 0.02, 0.03, max(0.03, 0.06) = 0.06, max(0.06, 0.04) = 0.06
    got = holm(p)
    assert got[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(got[4])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_holm_can_turn_a_holding_claim_into_cannot_tell():
    x = [1.0, 1.2, 0.8, 1.1, 0.9, 1.3, 0.7, 1.0]     # alone: holds
    weak = [0.3, -0.1, 0.5, 0.2, 0.0, 0.4, 0.1, 0.6]  # p_t about 0.006
    alone = decide([one_sided(weak, 0.0)])[0]
    assert alone["verdict"] == "holds"
    family = decide([one_sided(x, 0.0)] + [one_sided(weak, 0.0) for _ in range(5)])
    assert family[0]["verdict"] == "holds" and family[1]["p_t_adj"] == pytest.approx(min(1, 5 * alone["p_t"]))
    assert family[1]["verdict"] == "cannot tell"


def test_fisher_by_hand():
    # 1 of 5 vs 0 of 5 collapsed: P(table at least as extreme) = C(5,1) C(5,0) / C(10,1) = 0.5
    t = fisher_test(0, 5, 1, 5)
    assert t["p_t"] == pytest.approx(0.5) and not t["refuted"]
    assert decide([t])[0]["verdict"] == "cannot tell"
    strong = decide([fisher_test(0, 8, 7, 8)])[0]  # p = 1 / C(16, 8) * C(8,0) C(8,7) ... exact from scipy
    assert strong["verdict"] == "holds"
    assert decide([fisher_test(7, 8, 0, 8)])[0]["verdict"] == "does not hold"


def test_collapse_flags_runs_at_the_baseline_level():
    scores = {"fcn": {0: 62.0, 1: 64.5, 2: 61.0}, "ema": {0: 90.0, 1: 63.1, 2: 89.0},
              "weak": {0: 62.5, 1: 64.0, 2: 65.0}}
    got = collapsed(scores, "fcn")
    assert got == {"fcn": [], "ema": [1], "weak": []}  # weak's median sits in the baseline range: not collapsing


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


def test_alpha_matches_the_interval():
    """Holds (raw) exactly when the 95 % interval's lower bound clears the null."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        x = rng.normal(rng.uniform(-1, 2), 1.0, size=8)
        t = one_sided(x, 0.0)
        assert (t["p_t"] < ALPHA) == (t["ci_low"] > 0)
    assert stats.overall(["holds", "cannot tell"]) == "cannot tell"
    assert stats.overall(["holds", "does not hold"]) == "does not hold"
    assert stats.agree("holds", "holds") == "replicated" and stats.agree("holds", "cannot tell") == "not replicated"
    assert stats.agree("cannot tell", "cannot tell") == "undecided in both"
