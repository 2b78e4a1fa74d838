"""Plan entries with ``same_as``: checked to build the very same network, then copied, not trained."""

import json

import pytest

from segattn.compare import plan_from_dict, run_plan
from segattn.compare.plan import PlanError
from segattn.compare.runner import RESULT, check_same_as, run_dir

from .test_compare import TINY


def _plan(entries, **extra):
    data = json.loads(json.dumps(TINY))
    data["entries"] = [{"name": "fcn", "model": "fcn"}] + entries
    data.update(extra)
    return plan_from_dict(data, "tiny")


TWINS = [{"name": "nl", "model": "generic", "context": "nonlocal"},
         {"name": "nl-again", "model": "generic", "context": "nonlocal", "context_kw": {"reduction": 2},
          "same_as": "nl"}]


@pytest.mark.parametrize("entry,message", [
    ({"name": "x", "model": "fcn", "same_as": "missing"}, "same_as 'missing' must name another entry"),
    ({"name": "x", "model": "fcn", "same_as": "x"}, "same_as 'x' must name another entry"),
    ({"name": "x", "model": "fcn", "same_as": 3}, "same_as must name another entry, got 3"),
])
def test_same_as_must_name_another_entry(entry, message):
    with pytest.raises(PlanError, match=message):
        _plan([entry])


def test_same_as_names_the_entry_that_trains():
    with pytest.raises(PlanError, match="which is itself same_as 'fcn'; name the entry that trains"):
        _plan([{"name": "a", "model": "fcn", "same_as": "fcn"}, {"name": "b", "model": "fcn", "same_as": "a"}])


@pytest.mark.parametrize("twin,problem", [
    ({"name": "nl-dot", "model": "generic", "context": "nonlocal_dot"}, "their module trees differ"),
    ({"name": "nl-wide", "model": "generic", "context": "nonlocal", "kwargs": {"channels": 24}},
     "their module trees differ"),
])
def test_a_false_twin_is_refused_before_any_run(twin, problem, tmp_path):
    """Non-local and its dot form start equal (zero-initialised output), so the check cannot rest on
    the initial outputs; it names what differs, and nothing is written."""
    plan = _plan([TWINS[0], {**twin, "same_as": "nl"}])
    with pytest.raises(PlanError, match=f"entry '{twin['name']}': same_as 'nl', but {problem}"):
        check_same_as(plan, "synthetic")
    with pytest.raises(PlanError, match=problem):
        run_plan(plan, "synthetic", seeds=1, out=tmp_path / "cmp", log=lambda m: None)
    assert not (tmp_path / "cmp").exists()


def test_a_loss_weight_that_only_training_sees_is_told_apart():
    """The same network, outputs included, but another weight on the auxiliary loss: trained differently."""
    plan = _plan([TWINS[0], {"name": "nl-aux", "model": "generic", "context": "nonlocal", "kwargs": {"aux_weight": 0.3},
                             "same_as": "nl"}])
    check_same_as(plan, "synthetic")  # without an auxiliary head the weight is never used: the same training
    with pytest.raises(PlanError, match=r"their modules' settings differ \(loss_weights\)"):
        check_same_as(plan, "synthetic", ["model.aux=true"])


def test_outputs_with_perturbed_weights_tell_apart_what_the_tree_does_not(monkeypatch):
    """The last line of the check: two networks with one tree and one state, but another forward."""
    import torch

    from segattn.compare import runner

    plan = _plan(TWINS)
    real = runner.build_entry_model

    def build(cfg, entry, num_classes, seed):
        model = real(cfg, entry, num_classes, seed)
        if entry.name == "nl-again":  # the same modules, one output changed
            forward = model.forward
            model.forward = lambda x: [t * 1.0001 if isinstance(t, torch.Tensor) else t for t in [forward(x)]][0]
        return model

    monkeypatch.setattr(runner, "build_entry_model", build)
    with pytest.raises(PlanError, match="their outputs differ with the same perturbed weights"):
        check_same_as(plan, "synthetic")


@pytest.mark.slow
def test_a_twin_is_copied_not_trained(tmp_path):
    plan = _plan(TWINS, seeds=1)
    check_same_as(plan, "synthetic")  # a true twin passes
    out, lines = tmp_path / "cmp", []
    summary = run_plan(plan, "synthetic", seeds=1, out=out, log=lines.append)
    assert summary["trained"] == 2 and summary["reused"] == 1 and summary["done"] == 3
    copy = json.loads((run_dir(out, "nl-again", 0) / RESULT).read_text())
    source = json.loads((run_dir(out, "nl", 0) / RESULT).read_text())
    assert copy["metrics"] == source["metrics"] and copy["entry"] == "nl-again"
    assert copy["reused_from"]["entry"] == "nl" and copy["reused_from"]["plan"] == "tiny"
    assert "nl-again seed 0: same network as nl; its run copied" in lines
    md = (out / "compare.md").read_text()
    assert "Same network: 1 run of the entries marked `(same network as ...)` was copied" in md and "Reused:" not in md
    again = run_plan(plan, "synthetic", seeds=1, out=out, log=lambda m: None)
    assert again["trained"] == 0 and again["reused"] == 0 and again["skipped"] == 3


@pytest.mark.slow
def test_every_shipped_same_as_builds_the_same_network_on_every_protocol():
    from segattn.compare.plan import list_plans, load_plan

    checked = 0
    for name in list_plans():
        plan = load_plan(name)
        if any(e.same_as for e in plan.entries):
            for dataset in plan.protocols:
                check_same_as(plan, dataset)
                checked += 1
    assert checked >= 6  # all-modules on its six protocols


def test_a_twin_archived_without_weights_is_copied_without_them(tmp_path):
    """An archived plan (scripts/archive_runs.py) keeps no final.pt: the twin's run is copied all the same,
    before anything trains, and the copy has no weights either (--analyze leaves same_as entries out)."""
    from segattn.compare.reuse import copy_same_network
    from segattn.compare.runner import prepare_run

    plan = _plan(TWINS, seeds=1)
    out = tmp_path / "cmp"
    prepared = [(0, e, *prepare_run(out, plan, "synthetic", e, 0, 1, [])) for e in plan.entries]
    twin_dir, twin_data = prepared[1][2], prepared[1][3]
    twin_dir.mkdir(parents=True)
    (twin_dir / "compare_config.json").write_text(json.dumps(twin_data))
    (twin_dir / RESULT).write_text(json.dumps({"entry": "nl", "plan": "tiny", "metrics": {"mIoU": 0.5}}))
    (twin_dir / "analysis.json").write_text(json.dumps({"entry": "nl", "miou_clean": 50.0}))
    lines = []
    assert copy_same_network(prepared, out, plan, "synthetic", lines.append) == 1
    copy = run_dir(out, "nl-again", 0)
    result = json.loads((copy / RESULT).read_text())
    assert result["entry"] == "nl-again" and result["metrics"] == {"mIoU": 0.5} and result["reused_from"]["entry"] == "nl"
    assert json.loads((copy / "analysis.json").read_text())["entry"] == "nl-again"
    assert not (copy / "final.pt").exists() and lines == ["nl-again seed 0: same network as nl; its run copied"]
    assert copy_same_network(prepared, out, plan, "synthetic", lines.append) == 0  # never replaced
