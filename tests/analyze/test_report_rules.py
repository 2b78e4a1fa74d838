"""Verdicts of `segattn analyze` claims on constructed numbers: one-sample nulls with margins, paired
claims, one Holm family, collapsed runs counted apart."""

import pytest

from segattn.analyze.claims import claim as _claim
from segattn.analyze.claims import collapsed_runs, derive, judge
from segattn.analyze.report import describe_claim

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


def _mechanisms(s):
    """One run's measured mechanism metrics (seed ``s``), each a little noisy around a clear value."""
    j = SPREAD[s]
    return {"erank_path": 2.0 + j, "erank_in": 40.0, "fisher_gain_path": 30.0 + j, "denoise_index_out": 0.99 + j,
            "denoise_index_path": 0.5 + j, "roughness_out": 0.4 + j, "roughness_in": 0.8,
            "boundary_contrast_out": 8.0 + j,
            "boundary_contrast_in": 8.0, "meanrow_drop": 10.0 + j, "miou_clean": 90.0 + j}


def test_generated_mechanism_claims_state_null_and_margin_and_are_judged():
    from segattn.analyze.claims import make_claims

    groups = _groups(0.7)
    for s, run in groups["ema"].items():
        run.update(_mechanisms(s))
    groups = {e: {s: derive(r) for s, r in runs.items()} for e, runs in groups.items()}
    claims = make_claims(groups)
    by_id = {c["id"]: c for c in claims}
    assert by_id["2d.ema"]["threshold"] == 0.9 and "null: denoising index >= 0.9" in by_id["2d.ema"]["text"]
    assert by_id["1r.ema"]["threshold"] == 0.5 and by_id["1f.ema"]["threshold"] == 1.1
    # nothing about a metric no run measured (bases, EM, robustness at matched clean mIoU: fcn at 62, ema at 90)
    assert not any(c["id"].startswith(("4", "5", "2n", "2p")) for c in claims)
    got = {c["id"]: c["verdict"] for c in judge(claims, groups)}
    assert got["1r.ema"] == "holds" and got["1f.ema"] == "holds"      # rank 2 of 40; Fisher gain 30
    assert got["2d.ema"] == "does not hold" and got["2a.ema"] == "holds"  # the residual passes the noise back
    assert got["3w.ema"] == "holds" and got["3b.ema"] == "holds"      # roughness halved, edges kept
    assert got["6q.ema"] == "does not hold"                           # the mean row costs 10 points


def test_robustness_is_compared_only_at_matched_clean_accuracy():
    from segattn.analyze.claims import make_claims

    groups = _groups(0.7, [62.0 + 0.2 * s for s in range(8)])  # ema at the FCN's clean level
    for runs in groups.values():
        for s, run in runs.items():
            run.update({"drop_noise_0.1": 5.0 + SPREAD[s], "drop_pgd20_0.007843": 9.0 + SPREAD[s]})
    assert {"2n.ema", "2p.ema"} <= {c["id"] for c in make_claims(groups)}
    for s, run in groups["ema"].items():
        run["miou_clean"] = 70.0 + SPREAD[s]
    assert not {"2n.ema", "2p.ema"} & {c["id"] for c in make_claims(groups)}


def test_robustness_control_is_gcnet_where_the_fcn_is_not_matched():
    """Context without per-pixel averaging (GCNet: input plus one vector per image) is the matched control
    when the no-context entry is far below; GCNet itself gets no robustness claim against itself."""
    from segattn.analyze.claims import judge, make_claims

    groups = _groups(0.7)  # fcn at 62, ema at 90
    groups["gcnet"] = {s: {"module": "gcnet", "miou_clean": 90.3 + 0.1 * s} for s in range(8)}
    for e, noise in (("fcn", 20.0), ("ema", 2.0), ("gcnet", 5.0)):
        for s, run in groups[e].items():
            run.update({"drop_noise_0.1": noise + SPREAD[s], "drop_pgd20_0.007843": noise + 3 + SPREAD[s]})
    claims = {c["id"]: c for c in make_claims(groups)}
    assert claims["2n.ema"]["a"] == "gcnet" and "than `gcnet` (matched clean mIoU)" in claims["2n.ema"]["text"]
    assert not {"2n.gcnet", "2p.gcnet"} & set(claims)
    got = {c["id"]: c["verdict"] for c in judge(list(claims.values()), groups)}
    assert got["2n.ema"] == "holds" and got["2p.ema"] == "holds"  # ema loses 2, gcnet 5
    for s, run in groups["gcnet"].items():
        run["miou_clean"] = 80.0 + SPREAD[s]  # no longer matched: no control, no claim
    assert not {"2n.ema", "2p.ema"} & {c["id"] for c in make_claims(groups)}


def test_controls_pass_on_known_answers_and_fail_otherwise():
    from segattn.analyze.claims import controls

    good = {"denoise_index_identity": 1.0, "denoise_index_box3": 0.4, "roughness_in": 0.8, "roughness_ebox7": 0.4,
            "boundary_contrast_ebox7": 40.0, "boundary_contrast_box3": 5.0, "boundary_contrast_in": 8.0}
    groups = {"fcn": {0: derive({**good, "module": "identity", "roughness_out": 0.8, "fisher_gain_path": 1.0})},
              "ema": {0: derive({**good, "module": "ema"})}}
    got = {c["metric"]: c["ok"] for c in controls(groups)}
    assert all(got.values()), got
    # the label-aware smoother's controls read the context entries only (whose claims are read)
    groups["fcn"][0] = derive({**good, "module": "identity", "roughness_out": 0.8, "fisher_gain_path": 1.0,
                               "roughness_ebox7": 0.78})
    assert {c["metric"]: c["ok"] for c in controls(groups)}["roughness_ratio_ebox7"] is True
    groups["ema"][0] = derive({**good, "module": "ema", "roughness_ebox7": 0.78})
    assert {c["metric"]: c["ok"] for c in controls(groups)}["roughness_ratio_ebox7"] is False
    groups["ema"][0] = derive({**good, "module": "ema", "denoise_index_box3": 1.2})  # a "box filter" that amplifies
    assert {c["metric"]: c["ok"] for c in controls(groups)}["denoise_index_box3"] is False


def _ratio_groups(values):
    fcn = {s: {"module": "identity", "miou_clean": 62.0} for s in range(len(values))}
    ema = {s: {"module": "ema", "miou_clean": 90.0, "denoise_index_path": v, "denoise_index_out": v}
           for s, v in enumerate(values)}
    return {"fcn": fcn, "ema": ema}


def test_a_ratio_claim_is_judged_on_the_log_scale():
    """A denoising index of 2-4 on most seeds and 100 on one where the path passes almost no signal:
    the arithmetic mean's interval spans the null (cannot tell); on the log scale it does not hold, and
    the value shown is the geometric mean."""
    values = [2.0, 3.0, 4.0, 2.5, 3.5, 100.0, 2.2, 3.1]
    c = _claim("2a.ema", "path index below 0.9", "below", "denoise_index_path", "ema", threshold=0.9)
    assert c["scale"] == "log"
    got = judge([c], _ratio_groups(values))[0]
    assert got["verdict"] == "does not hold"
    geo = 1.0
    for v in values:
        geo *= v ** (1 / len(values))
    assert got["diff"]["value"]["mean"] == pytest.approx(geo)
    linear = judge([{**c, "scale": "linear"}], _ratio_groups(values))[0]
    assert linear["verdict"] == "cannot tell"


def test_on_the_log_scale_a_ratio_and_its_inverse_are_equally_far_from_one():
    up = judge([_claim("x", "above 1", "above", "denoise_index_out", "ema", threshold=1.0)],
               _ratio_groups([2.0, 2.1, 1.9, 2.05, 1.95, 2.0, 2.02, 1.98]))[0]
    down = judge([_claim("y", "below 1", "below", "denoise_index_path", "ema", threshold=1.0)],
                 _ratio_groups([1 / v for v in [2.0, 2.1, 1.9, 2.05, 1.95, 2.0, 2.02, 1.98]]))[0]
    assert up["diff"]["mean"] == pytest.approx(down["diff"]["mean"])
    assert up["verdict"] == down["verdict"] == "holds"


def test_a_non_ratio_claim_stays_on_its_own_scale():
    assert _claim("5s.x", "gain above 1", "above", "swap_gain", "ema", threshold=1.0)["scale"] == "linear"


def test_a_non_positive_ratio_is_left_out_and_said():
    c = _claim("2a.ema", "path index below 0.9", "below", "denoise_index_path", "ema", threshold=0.9)
    got = judge([c], _ratio_groups([0.5, 0.4, 0.0, 0.45, 0.5, 0.42, 0.48, 0.47]))[0]
    assert got["diff"]["n"] == 7 and got["diff"]["value"]["nonpositive"] == 1
    assert "1 value(s) <= 0 left out" in describe_claim(got)
