"""One decision rule per claim kind (docs/compare.md), on constructed per-seed numbers."""

import numpy as np
import pytest

from segattn.compare import PlanError, plan_from_dict
from segattn.compare.claims import judge_claims, replication, rule_test
from segattn.stats import decide

SPREAD = [0.4, -0.3, 0.2, -0.1, 0.3, -0.4, 0.1, -0.2]  # mean 0, sd about 0.29: the 95 % half-width is 0.24


def _verdict(kind, d, margin=1.0):
    return decide([rule_test(kind, d, margin)])[0]["verdict"]


def _shift(c):
    return [c + v for v in SPREAD]


@pytest.mark.parametrize("kind, centre, expected", [
    ("better", 2.0, "holds"), ("better", 0.1, "cannot tell"), ("better", -2.0, "does not hold"),
    ("no_gain", 0.0, "holds"), ("no_gain", 1.05, "cannot tell"), ("no_gain", 3.0, "does not hold"),
    ("not_worse", -0.5, "holds"), ("not_worse", -1.0, "cannot tell"), ("not_worse", -3.0, "does not hold"),
    ("equivalent", 0.3, "holds"), ("equivalent", 0.95, "cannot tell"), ("equivalent", 2.5, "does not hold"),
    ("equivalent", -2.5, "does not hold"),
])
def test_each_rule_on_constructed_differences(kind, centre, expected):
    assert _verdict(kind, _shift(centre)) == expected


@pytest.mark.parametrize("kind, boundary", [("better", 0.0), ("no_gain", 1.0), ("not_worse", -1.0),
                                            ("equivalent", 1.0), ("equivalent", -1.0)])
def test_no_jump_while_the_interval_straddles_the_boundary(kind, boundary):
    """Slide the same spread across the boundary: every verdict whose interval contains the boundary is
    'cannot tell', and holds / does not hold never sit next to each other."""
    seen = []
    for c in np.linspace(boundary - 3, boundary + 3, 121):
        t = decide([rule_test(kind, _shift(float(c)), 1.0)])[0]
        if t["ci_low"] <= boundary <= t["ci_high"]:
            assert t["verdict"] == "cannot tell", (c, t)
        seen.append(t["verdict"])
    for x, y in zip(seen, seen[1:]):
        assert {x, y} != {"holds", "does not hold"}, seen


def _plan(claims, seeds=8):
    return plan_from_dict({"name": "t", "reference": "fcn", "seeds": seeds,
                           "protocols": {"synthetic": {"config": "synthetic/compare_synthetic.yaml"}},
                           "entries": [{"name": n, "model": "fcn"} for n in ("fcn", "a", "b", "c")],
                           "claims": claims}, "t")


def _runs(values, macs=1.0):
    return {s: {"metrics": {"mIoU": v / 100}, "cost": {"context_macs": macs}} for s, v in enumerate(values)}


def test_collapsed_runs_are_counted_and_judged_apart():
    plan = _plan([{"id": "x", "text": "a beats b", "kind": "better", "a": "a", "b": "b"},
                  {"id": "f", "text": "b collapses less often than a", "kind": "fewer_collapses", "a": "b", "b": "a"}])
    fcn = [62.0, 63.0, 61.5, 62.5, 64.0, 62.0, 61.0, 63.5]
    b = [88.0, 88.4, 87.9, 88.1, 88.3, 88.0, 88.2, 87.8]
    a = [89.0, 89.5, 63.0, 89.2, 89.4, 89.1, 89.3, 89.6]  # seed 2 collapsed to the baseline
    by_entry = {"fcn": _runs(fcn), "a": _runs(a), "b": _runs(b), "c": _runs(b)}
    got = {c["id"]: c for c in judge_claims(plan.claims, by_entry, 1.0, "fcn")}
    x = got["x"]
    assert x["variants"]["all"]["verdict"] == "cannot tell"      # the collapsed run drags the interval below 0
    assert x["variants"]["non_collapsed"]["verdict"] == "holds"  # 7 seeds without it
    assert x["variants"]["non_collapsed"]["tests"][0]["seeds"] == [0, 1, 3, 4, 5, 6, 7]
    assert x["verdict"] == "cannot tell" and x["verdict_runs"] == "all"
    f = got["f"]["tests"][0]
    assert (f["a_count"], f["a_runs"], f["b_count"], f["b_runs"]) == (0, 8, 1, 8)
    assert f["p_t"] == pytest.approx(0.5) and got["f"]["verdict"] == "cannot tell"  # 1/8 vs 0/8: Fisher p = 0.5


def test_cheaper_is_exact_and_outside_the_family():
    plan = _plan([{"id": "c1", "text": "", "kind": "cheaper", "a": "a", "b": "b", "ratio": 0.1},
                  {"id": "c2", "text": "", "kind": "cheaper", "a": "c", "b": "b", "ratio": 0.1}])
    by_entry = {"fcn": _runs([60.0] * 8), "a": _runs([80.0] * 8, 100.0), "b": _runs([80.0] * 8, 1000.0),
                "c": _runs([80.0] * 8, 101.0)}
    got = {c["id"]: c for c in judge_claims(plan.claims, by_entry, 1.0, "fcn")}
    assert got["c1"]["verdict"] == "holds" and got["c1"]["tests"][0]["fraction"] == pytest.approx(0.1)
    assert got["c2"]["verdict"] == "does not hold"


def test_replication_needs_the_same_verdict():
    first = [{"id": "1", "verdict": "holds"}, {"id": "2", "verdict": "holds"}, {"id": "3", "verdict": "cannot tell"},
             {"id": "4", "verdict": "cannot tell"}]
    second = [{"id": "1", "verdict": "holds"}, {"id": "2", "verdict": "cannot tell"}, {"id": "4", "verdict": "cannot tell"}]
    got = {r["id"]: r["status"] for r in replication(first, second)}
    assert got == {"1": "replicated", "2": "not replicated", "3": "not replicated yet", "4": "undecided in both"}


@pytest.mark.parametrize("claim, match", [
    ({"id": "1", "text": "", "kind": "better", "first": "a", "second": "b"}, r"unknown key\(s\) \['first', 'second'\]"),
    ({"id": "1", "text": "", "kind": "better", "a": "a"}, r"needs 'a' and 'b'.*\['b'\]"),
    ({"id": "1", "text": "", "kind": "better", "entries": ["a", "b"]}, r"needs 'a' and 'b'"),
    ({"id": "1", "text": "", "kind": "equivalent", "a": "a", "b": "b"}, r"entries: \[x, y, \.\.\.\]"),
    ({"id": "1", "text": "", "kind": "equivalent", "entries": "a"}, r"list of at least two entry names"),
    ({"id": "1", "text": "", "kind": "better", "a": "a", "b": "zz"}, r"unknown entry \['zz'\]"),
    ({"id": "1", "text": "", "kind": "better", "a": "a", "b": "b", "protocols": ["camvid"]},
     r"protocols \['camvid'\] are not datasets of the plan; it has \['synthetic'\]"),
    ({"id": "1", "text": "", "kind": "better", "a": "a", "b": "b", "protocols": "synthetic"}, r"non-empty list"),
    ({"id": "1", "text": "", "kind": "better", "a": "a", "b": "b", "protocols": []}, r"non-empty list"),
])
def test_a_malformed_claim_says_what_is_wrong(claim, match):
    with pytest.raises(PlanError, match=match) as info:
        _plan([claim])
    assert "None" not in str(info.value) and "\n" not in str(info.value)


def test_a_claim_is_judged_on_the_datasets_it_names_only():
    """A task-specific claim (``protocols``) is left out of another task's report and its Holm family,
    and the report names it as not judged there."""
    from segattn.compare.claims import claims_markdown

    data = {"name": "t", "reference": "fcn", "seeds": 8,
            "protocols": {"synthetic": {"config": "synthetic/compare_synthetic.yaml"},
                          "relational": {"config": "synthetic/compare_synthetic_relational.yaml"}},
            "entries": [{"name": n, "model": "fcn"} for n in ("fcn", "a")],
            "claims": [{"id": "all", "text": "a beats fcn", "kind": "better", "a": "a", "b": "fcn"},
                       {"id": "rel", "text": "a beats fcn here", "kind": "better", "a": "a", "b": "fcn",
                        "protocols": ["relational"]}]}
    plan = plan_from_dict(data, "t")
    assert [c.id for c in plan.claims_for("synthetic")] == ["all"]
    assert [c.id for c in plan.claims_for("relational")] == ["all", "rel"]
    agg = {"margin": 1.0, "seeds": 8, "entries": [], "claims": [],
           "claims_elsewhere": [{"id": "rel", "text": "a beats fcn here", "protocols": ["relational"]}]}
    md = "\n".join(claims_markdown(agg))
    assert "Not judged on this task (each is a claim about the tasks named): rel (relational)." in md
