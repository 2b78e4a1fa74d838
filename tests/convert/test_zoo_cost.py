"""The accuracy-vs-cost data of the mmseg zoo: the committed cost table and the Pareto front."""

from __future__ import annotations

import json

import pytest

from segattn.convert import zoo_cost
from segattn.convert.zoo import zoo_entries, zoo_entry
from segattn.convert.zoo_cost import COST_TABLE, architecture_cost, in_scope, pareto_front, zoo_points
from segattn.errors import SegattnError


def test_pareto_front_known_answer() -> None:
    # (cost, score): 0 and 2 tie on cost (the higher score wins), 3 is dominated by 1, 5 repeats 4's
    # cost and score (the first kept), 6 is the most accurate
    points = [(1.0, 50.0), (2.0, 60.0), (1.0, 55.0), (3.0, 58.0), (4.0, 70.0), (4.0, 70.0), (9.0, 71.0),
              (0.5, 10.0)]
    assert pareto_front(points) == [7, 2, 1, 4, 6]
    assert pareto_front([]) == []
    assert pareto_front([(2.0, 1.0)]) == [0]
    # the front's scores rise strictly with cost, and every other point is dominated by a front point
    front = pareto_front(points)
    assert all(points[a][1] < points[b][1] and points[a][0] < points[b][0] for a, b in zip(front, front[1:]))
    for i, (c, s) in enumerate(points):
        if i not in front:
            assert any(points[j][0] <= c and points[j][1] >= s for j in front)


def test_cost_table_covers_every_cityscapes_and_ade20k_entry() -> None:
    """Fails when the manifest gains an in-scope entry without a cost row: run scripts/make_zoo_cost.py."""
    costs = json.loads(COST_TABLE.read_text(encoding="utf-8"))["costs"]
    wanted = {e.name for e in zoo_entries() if in_scope(e)}
    missing = sorted(wanted - set(costs))
    assert not missing, f"no cost row for {missing}: run scripts/make_zoo_cost.py"
    assert not set(costs) - wanted, "the cost table has rows for entries the manifest no longer has"
    assert len(wanted) >= 171
    for name, row in costs.items():
        assert row["macs"] > 0 and row["params"] > 0
        assert tuple(row["size"]) == zoo_cost.PROTOCOL_SIZE[zoo_entry(name).dataset]
    # every point has a published mIoU and a cost; 769x769 Cityscapes and other datasets are out of scope
    points = zoo_points()
    assert len(points) == len(wanted)
    assert not zoo_points("769x769") and not zoo_points("voc")


def test_cost_rows_match_a_fresh_count() -> None:
    """Spot checks: the committed numbers are what architecture_cost computes now (R-50 FCN, HRNet-W18 OCR)."""
    costs = json.loads(COST_TABLE.read_text(encoding="utf-8"))["costs"]
    for name in ("fcn_r50-d8_4xb4-80k_ade20k-512x512", "ocrnet_hr18s_4xb4-80k_ade20k-512x512"):
        macs, params = architecture_cost(zoo_entry(name))
        assert (costs[name]["macs"], costs[name]["params"]) == (macs, params)


def test_missing_cost_row_is_one_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(zoo_cost, "_costs", lambda: {})
    with pytest.raises(SegattnError, match="no row in mmseg_zoo_cost.json; run scripts/make_zoo_cost.py"):
        zoo_points("emanet")


def test_costing_on_fake_tensors_leaves_no_fake_tensor_in_caches() -> None:
    """PSANet caches its gather index per size: counting two PSANets on fake tensors, the second
    failed ('Mixing fake modes') before the cache skipped fake tensors."""
    from segattn.modules import psanet

    entry = zoo_entry("psanet_r50-d8_4xb4-80k_ade20k-512x512")
    assert architecture_cost(entry) == architecture_cost(entry)
    assert not any(type(t).__name__ == "FakeTensor" for t in psanet._INDEX_CACHE.values())
