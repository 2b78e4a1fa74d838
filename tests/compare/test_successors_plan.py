"""The `successors` plan (issue 21): it loads, its claims parse into the kinds the report judges, every
entry builds and runs a forward at the protocol's size, and the two claim kinds it introduced
(`not_worse`, `cheaper`) are judged from constructed results."""

import math

import pytest
import torch

from segattn.compare import PlanError, load_plan, plan_from_dict
from segattn.compare.claims import judge_claims
from segattn.compare.plan import entry_config_dict, validate_plan
from segattn.compare.report import markdown
from segattn.compare.runner import build_entry_model
from segattn.engine.config import config_from_dict

PLAN = load_plan("successors")


def test_successors_plan_loads_and_names_its_entries():
    names = [e.name for e in PLAN.entries]
    assert PLAN.reference == "fcn" and PLAN.seeds == 8 and PLAN.margin == 1.0
    assert {"fcn", "nonlocal", "gcnet", "dnl", "ocr", "ham-nmf", "ham-nmf-bptt", "ham-nmf-1step", "ema-T1",
            "ema-T3", "ema-T3-bptt", "ppm", "encnet", "dmnet"} == set(names)
    assert PLAN.protocols["synthetic"].config == "synthetic/compare_synthetic.yaml"  # the shared protocol
    assert PLAN.entry("ham-nmf-bptt").context_kw["grad"] == "bptt"
    assert PLAN.entry("ema-T3-bptt").context_kw["backprop_through_em"] is True
    for dataset in PLAN.protocols:
        validate_plan(PLAN, dataset)


def test_successors_claims_parse():
    claims = {c.id: c for c in PLAN.claims}
    assert claims["gc2"].kind == "cheaper" and claims["gc2"].ratio == 0.1
    assert claims["ocr"].kind == "not_worse" and (claims["ocr"].a, claims["ocr"].b) == ("ocr", "nonlocal")
    assert claims["ham5"].entries == ["ham-nmf", "ham-nmf-bptt"] and claims["ema1"].kind == "equivalent"
    assert {c.kind for c in PLAN.claims} == {"better", "equivalent", "not_worse", "cheaper", "fewer_collapses"}
    assert (claims["ema3"].a, claims["ema3"].b) == ("ema-T3-bptt", "ema-T3")


@pytest.mark.parametrize("name", [e.name for e in PLAN.entries])
def test_successors_entries_build_and_run(name):
    entry = PLAN.entry(name)
    cfg = config_from_dict(entry_config_dict(PLAN, "synthetic", entry, 0, "unused"))
    model = build_entry_model(cfg, entry, 3, 0).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 128, 128))
    logits = out["out"] if isinstance(out, dict) else out
    assert logits.shape == (1, 3, 128, 128) and torch.isfinite(logits).all()


def _runs(values, macs):
    counts = {k: [[1, 1]] for k in ("tp", "gt", "pred")}  # one image, two classes: bootstrap difference 0
    return {s: {"metrics": {"mIoU": v / 100}, "cost": {"context_macs": macs}, "per_image": counts}
            for s, v in enumerate(values)}


def test_not_worse_and_cheaper_are_judged_from_the_numbers():
    plan = plan_from_dict({
        "name": "t", "reference": "a", "protocols": {"synthetic": {"config": "synthetic/compare_synthetic.yaml"}},
        "entries": [{"name": "a", "model": "fcn"}, {"name": "b", "model": "fcn"}, {"name": "c", "model": "fcn"}],
        "claims": [{"id": "n1", "text": "", "kind": "not_worse", "a": "b", "b": "a"},
                   {"id": "n2", "text": "", "kind": "not_worse", "a": "c", "b": "a"},
                   {"id": "c1", "text": "", "kind": "cheaper", "a": "b", "b": "a", "ratio": 0.1},
                   {"id": "c2", "text": "", "kind": "cheaper", "a": "c", "b": "a", "ratio": 0.1}]}, "t")
    base = [90.0, 91.0, 92.0, 90.5, 91.5, 90.2, 91.2, 92.2]
    by_entry = {"a": _runs(base, 1000.0), "b": _runs([v + d for v, d in zip(base, [-.1, -.2, .1, 0, -.1, .2, -.2, .1])], 100.0),
                "c": _runs([v - 5 + d for v, d in zip(base, [0, .3, -.2, .1, 0, -.1, .2, 0])], 101.0)}
    got = {c["id"]: c for c in judge_claims(plan.claims, by_entry, plan.margin, "a")}
    assert got["n1"]["verdict"] == "holds"          # differences about 0 over 8 seeds: well above -1
    assert got["n2"]["verdict"] == "does not hold"  # about -5 points, interval below -1
    assert got["c1"]["verdict"] == "holds" and got["c1"]["tests"][0]["fraction"] == pytest.approx(0.1)
    assert got["c2"]["verdict"] == "does not hold"  # 0.101 > 0.1
    empty = judge_claims([plan.claims[2]], {"a": {}, "b": by_entry["b"]}, 1.0, "a")[0]
    assert empty["verdict"] == "cannot tell" and math.isnan(empty["tests"][0]["fraction"])
    agg = {"plan": "t", "description": "", "dataset": "synthetic", "seeds": 8, "reference": "a", "margin": 1.0,
           "classes": [], "entries": [], "claims": list(got.values()), "runs_done": 0, "runs_total": 0, "commits": []}
    md = markdown(agg, "segattn compare t")
    assert "`b` 0.000 M / `a` 0.001 M context MACs = 0.100 (bound 0.1): holds." in md
    assert "Holm-adjusted" in md and "exact sign-flip p = 0.004" in md  # n1: all 8 sign patterns of d + 1 > 0


def test_ratio_belongs_to_cheaper_claims():
    data = {"name": "t", "protocols": {"synthetic": {"config": "synthetic/compare_synthetic.yaml"}},
            "entries": [{"name": "a", "model": "fcn"}, {"name": "b", "model": "fcn"}],
            "claims": [{"id": "x", "text": "", "kind": "better", "a": "a", "b": "b", "ratio": 0.5}]}
    with pytest.raises(PlanError, match="ratio"):
        plan_from_dict(data, "t")
    data["claims"][0].update(kind="cheaper", ratio=0)
    with pytest.raises(PlanError, match="positive"):
        plan_from_dict(data, "t")
