"""Verdicts of `segattn analyze` claims on constructed numbers: one-sample nulls with margins, paired
claims, one Holm family, collapsed runs counted apart."""

import pytest

from segattn.analyze.report import _claim, collapsed_runs, judge

SPREAD = [0.01, -0.01, 0.02, -0.02, 0.005, -0.005, 0.015, -0.015]


def _groups(nsr, miou_ema=None):
    miou_ema = miou_ema or [90.0 + 0.1 * s for s in range(8)]
    fcn = {s: {"module": "identity", "miou_clean": 62.0 + 0.2 * s, "drop": 5.0 + SPREAD[s] * 10} for s in range(8)}
    ema = {s: {"module": "ema", "miou_clean": miou_ema[s], "nsr_gain": nsr + SPREAD[s], "drop": 2.0 + SPREAD[s] * 10}
           for s in range(8)}
    return {"fcn": fcn, "ema": ema}


@pytest.mark.parametrize("nsr, expected", [(0.7, "holds"), (0.9, "cannot tell"), (0.95, "does not hold")])
def test_one_sample_claim_uses_its_stated_null(nsr, expected):
    claim = _claim("1m", "gain below 0.9", "below", "nsr_gain", "ema", threshold=0.9)
    assert judge([claim], _groups(nsr))[0]["verdict"] == expected


def test_above_and_paired_claims():
    groups = _groups(0.7)
    above = _claim("x", "gain above 0.5", "above", "nsr_gain", "ema", threshold=0.5)
    paired = _claim("y", "ema loses less than fcn", "better", "drop", "fcn", "ema", higher=True)
    got = judge([above, paired], groups)
    assert [c["verdict"] for c in got] == ["holds", "holds"]
    assert got[1]["diff"]["mean"] == pytest.approx(3.0)
    assert got[0]["diff"]["p_t_adj"] >= got[0]["diff"]["p_t"]  # one Holm family


def test_a_collapsed_run_is_counted_and_judged_apart():
    miou = [90.0, 90.2, 62.5, 90.1, 90.3, 89.9, 90.4, 90.0]  # seed 2 at the FCN's level
    groups = _groups(0.7, miou)
    groups["ema"][2]["nsr_gain"] = 1.5  # the collapsed run's module does nothing useful
    assert collapsed_runs(groups) == {"fcn": [], "ema": [2]}
    c = judge([_claim("1m", "gain below 0.9", "below", "nsr_gain", "ema", threshold=0.9)], groups)[0]
    assert c["verdict"] == "cannot tell"                               # all runs: the outlier widens the interval
    assert c["variants"]["non_collapsed"]["verdict"] == "holds"        # 7 seeds without it
    assert c["variants"]["non_collapsed"]["diff"]["seeds"] == [0, 1, 3, 4, 5, 6, 7]


def test_generated_mechanism_claims_state_null_and_margin():
    from segattn.analyze.report import make_claims

    groups = _groups(0.7)
    claims = {c["id"]: c for c in make_claims(groups)}
    assert claims["1m.ema"]["threshold"] == 0.9 and "null: gain >= 0.9" in claims["1m.ema"]["text"]
    assert claims["2.ema"]["threshold"] == 0.9 and claims["3.ema"]["threshold"] == 0.5
