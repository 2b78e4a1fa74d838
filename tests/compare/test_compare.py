"""`segattn compare`: a tiny plan end to end (interrupt, resume, skip) and the report's numbers by hand."""

import json
import math
import warnings

import numpy as np
import pytest
import torch

from segattn.cli import main
from segattn.compare import PlanError, ablate_reasoners, load_plan, plan_from_dict, run_plan
from segattn.compare.plan import list_plans, validate_plan
from segattn.compare.report import collect
from segattn.compare.runner import RESULT, run_dir
from segattn.stats import PUBLISHED_SEEDS

TINY_SET = {
    "schedule.iters": 3, "schedule.warmup_iters": 0, "data.batch_size": 2, "data.val_batch_size": 2,
    "model.kwargs.channels": 16, "train.log_interval": 1, "train.ckpt_interval": 1,
    "data.dataset_kwargs": {"size": [32, 32], "num_classes": 3, "blob_size": [8, 10], "margin": 8, "cue_size": 6,
                            "num_blobs": [1, 2]},
    "data.train_kwargs.num_samples": 8, "data.val_kwargs.num_samples": 5, "eval.scales": [0.5],
}
TINY = {
    "name": "tiny", "reference": "fcn", "seeds": 2, "margin": 1.0,
    "protocols": {"synthetic": {"config": "synthetic/fcn_r18_synthetic.yaml", "set": TINY_SET}},
    "entries": [{"name": "fcn", "model": "fcn"}, {"name": "nl", "model": "generic", "context": "nonlocal"}],
    "claims": [{"id": "x", "text": "nl beats fcn", "kind": "better", "a": "nl", "b": "fcn"}],
}
T_975 = {1: 12.706204736, 2: 4.302652730}  # Student t quantiles, from any statistics table


class StopAt:
    """Training callback: request a stop at iteration ``at`` of the ``nth`` run it sees (1-based)."""

    def __init__(self, nth: int, at: int) -> None:
        self.nth, self.at, self.runs, self.last = nth, at, 0, None

    def __call__(self, trainer, it):
        if trainer is not self.last:
            self.runs, self.last = self.runs + 1, trainer
        if self.runs == self.nth and it == self.at:
            trainer.stop.requested = True


@pytest.mark.slow
def test_tiny_plan_interrupt_resume_and_report(tmp_path):
    plan = plan_from_dict(json.loads(json.dumps(TINY)), "tiny")
    out = tmp_path / "cmp"
    logs = []
    first = run_plan(plan, "synthetic", out=out, threads=1, callbacks=[StopAt(nth=3, at=2)], log=logs.append)
    assert first["interrupted"] and first["done"] == 2 and first["total"] == 4
    # seed-major order: fcn s0, nl s0 finished; fcn s1 stopped at iteration 2 with a checkpoint
    assert (run_dir(out, "fcn", 0) / RESULT).is_file() and (run_dir(out, "nl", 0) / RESULT).is_file()
    assert not (run_dir(out, "fcn", 1) / RESULT).exists()
    assert (run_dir(out, "fcn", 1) / "train" / "last.pt").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in out.glob(f"runs/*/seed0/{RESULT}")}
    first_session = json.loads((run_dir(out, "fcn", 1) / "train_time.json").read_text())["seconds"]

    logs.clear()
    second = run_plan(plan, "synthetic", out=out, threads=1, log=logs.append)
    assert not second["interrupted"] and second["done"] == 4
    assert second["skipped"] == 2 and second["trained"] == 2
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished runs untouched
    assert any("fcn seed 1: resuming" in line for line in logs)
    resumed = json.loads((run_dir(out, "fcn", 1) / RESULT).read_text())
    assert resumed["train"]["resumed"] and resumed["train"]["iterations"] == 3
    assert resumed["train"]["wall_s"] > first_session > 0  # training time adds up over sessions
    assert not list(out.glob("runs/*/seed*/train/*.pt"))  # finished runs drop their checkpoints

    # a third call trains nothing
    third = run_plan(plan, "synthetic", out=out, threads=1, log=logs.append, report=False)
    assert third["trained"] == 0 and third["skipped"] == 4

    # the report's numbers, recomputed by hand from the runs' result.json
    results = {(r["entry"], r["seed"]): r for r in collect(out)}
    assert len(results) == 4
    agg = json.loads((out / "compare.json").read_text())
    nl = [100 * results[("nl", s)]["metrics"]["mIoU"] for s in (0, 1)]
    fc = [100 * results[("fcn", s)]["metrics"]["mIoU"] for s in (0, 1)]
    mean = (nl[0] + nl[1]) / 2
    std = math.sqrt(((nl[0] - mean) ** 2 + (nl[1] - mean) ** 2) / 1)
    half = T_975[1] * std / math.sqrt(2)
    row = {e["name"]: e for e in agg["entries"]}["nl"]
    assert row["mIoU"]["mean"] == pytest.approx(mean, abs=1e-9)
    assert row["mIoU"]["std"] == pytest.approx(std, abs=1e-9)
    assert row["mIoU"]["ci_low"] == pytest.approx(mean - half, abs=1e-6)
    assert row["mIoU"]["ci_high"] == pytest.approx(mean + half, abs=1e-6)
    d = [nl[0] - fc[0], nl[1] - fc[1]]
    dmean = sum(d) / 2
    dstd = abs(d[0] - d[1]) / math.sqrt(2)
    assert row["vs_reference"]["mean"] == pytest.approx(dmean, abs=1e-9)
    assert row["vs_reference"]["std"] == pytest.approx(dstd, abs=1e-9)
    dhalf = T_975[1] * dstd / math.sqrt(2)
    assert row["vs_reference"]["ci_low"] == pytest.approx(dmean - dhalf, abs=1e-6)
    # the per-run mIoU is the dataset-level one of the stored per-image counts
    r = results[("nl", 0)]
    tp, gt, pr = (np.asarray(r["per_image"][k]).sum(0) for k in ("tp", "gt", "pred"))
    union = gt + pr - tp
    iou = [t / u for t, u in zip(tp, union) if u > 0]
    assert r["metrics"]["mIoU"] == pytest.approx(sum(iou) / len(iou), abs=1e-12)
    for res in results.values():  # per-image counting agrees with the engine's own evaluation
        assert res["metrics"]["mIoU"] == pytest.approx(res["engine_mIoU"], abs=1e-12)
    from segattn.compare.runner import build_entry_model
    from segattn.engine.config import config_from_dict

    stored = [json.loads((run_dir(out, "nl", s) / "compare_config.json").read_text()) for s in (0, 1)]
    cfg = config_from_dict({k: v for k, v in stored[0].items() if not k.startswith("_")})
    assert r["cost"]["params"] == sum(p.numel() for p in build_entry_model(cfg, plan.entry("nl"), 3, 0).parameters())
    assert r["cost"]["errors"] == {} and r["cost"]["latency_ms"] > 0 and r["cost"]["train_step_mem_mb"] >= 0
    # seeds change the initialisation and data order only: the configs differ in train.seed (and paths)
    for cfg_data in stored:
        cfg_data["train"].pop("work_dir"), cfg_data.pop("name")
    assert stored[0]["train"].pop("seed") == 0 and stored[1]["train"].pop("seed") == 1
    assert stored[0] == stored[1]
    assert r["cost"]["macs"] > r["cost"]["context_macs"] > 0
    assert r["cost"]["eval_size"] == [16, 16]  # 32x32 images run at eval.scales 0.5
    fc_row = {e["name"]: e for e in agg["entries"]}["fcn"]
    assert fc_row["cost"]["context_macs"] == 0
    md = (out / "compare.md").read_text()
    assert f"{mean:.1f} ± {std:.1f}" in md and "## Claims" in md
    assert agg["claims"][0]["verdict"] in ("holds", "does not hold", "cannot tell")
    assert (out / "compare.csv").read_text().startswith("entry,")
    from segattn.compare.report import headline

    assert f"| `nl` | 2 | {mean:.1f} ± {std:.1f} | {dmean:+.1f} [" in headline(agg)
    assert (out / "headline.md").read_text() == headline(agg) + "\n"  # the README snippet, written with the report


@pytest.mark.slow
def test_runs_held_by_another_process_are_left_to_it(tmp_path):
    """Several `segattn compare` processes on one --out share the runs: a run whose folder lock is
    held by a live process is skipped (not trained twice, its files untouched); a dead owner's lock
    is taken over."""
    import os
    import subprocess
    import sys

    plan = plan_from_dict(json.loads(json.dumps(TINY)), "tiny")
    out = tmp_path / "cmp"
    held = run_dir(out, "fcn", 0)
    held.mkdir(parents=True)
    lock = held / ".segattn.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": __import__("socket").gethostname(), "started": "now"}))
    logs = []
    first = run_plan(plan, "synthetic", out=out, seeds=1, threads=1, log=logs.append)
    assert first["busy"] == 1 and first["trained"] == 1 and first["done"] == 1
    assert any("fcn seed 0: being trained by another process" in line for line in logs)
    assert lock.is_file() and sorted(p.name for p in held.iterdir()) == [".segattn.lock"]
    assert (run_dir(out, "nl", 0) / RESULT).is_file() and not (run_dir(out, "nl", 0) / ".segattn.lock").exists()

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": __import__("socket").gethostname(), "started": "x"}))
    second = run_plan(plan, "synthetic", out=out, seeds=1, threads=1, log=logs.append, report=False)
    assert second["busy"] == 0 and second["trained"] == 1 and (held / RESULT).is_file() and not lock.exists()


def test_resume_refuses_a_changed_config(tmp_path):
    plan = plan_from_dict(json.loads(json.dumps(TINY)), "tiny")
    out = tmp_path / "cmp"
    rdir = run_dir(out, "fcn", 0)
    rdir.mkdir(parents=True)
    from segattn.compare.runner import prepare_run

    _, data = prepare_run(out, plan, "synthetic", plan.entries[0], 0, 1, [])
    data["schedule"]["iters"] = 99
    (rdir / "compare_config.json").write_text(json.dumps(data))
    with pytest.raises(PlanError, match="schedule.iters"):
        prepare_run(out, plan, "synthetic", plan.entries[0], 0, 1, [])


@pytest.mark.parametrize("name", list_plans())
def test_shipped_plans_validate(name):
    plan = load_plan(name)
    assert plan.entries and plan.reference in [e.name for e in plan.entries]
    for dataset in plan.protocols:
        with warnings.catch_warnings(record=True) as seen:  # the check is quiet: the runs show the modules' warnings
            warnings.simplefilter("always")
            validate_plan(plan, dataset)
        assert not [str(w.message) for w in seen if "segattn" in w.filename], (name, dataset)


@pytest.mark.parametrize("name", list_plans())
def test_shipped_plans_with_the_synthetic_task_have_the_issue_30_tasks(name):
    """A plan that runs on the synthetic task runs on every task of segattn.data.synthetic that tests
    a mechanism (task-validation itself validates those tasks, not the shipped one)."""
    plan = load_plan(name)
    if "synthetic" in plan.protocols:
        assert {"relational", "small-objects", "clean-background"} <= set(plan.protocols), name


@pytest.mark.parametrize("name", list_plans())
def test_shipped_plans_default_to_the_published_seed_count(name):
    """A shipped plan run without --seeds trains enough seeds that a claim can hold (the documented
    commands in docs/results.md give no --seeds)."""
    assert load_plan(name).seeds >= PUBLISHED_SEEDS, name


def test_shipped_plan_names():
    assert {"survey-table", "reasoning-ablation", "pairwise-functions", "all-modules", "successors", "bases"} <= set(list_plans())


@pytest.mark.parametrize("mutate, match", [
    (lambda p: p["entries"].append({"name": "fcn", "model": "fcn"}), "unique"),
    (lambda p: p["entries"][1].update(colour=1), "unknown key"),
    (lambda p: p.update(reference="nope"), "reference"),
    (lambda p: p["claims"][0].update(a="nope"), "unknown entr"),
    (lambda p: p["claims"][0].update(kind="maybe"), "kind"),
    (lambda p: p.update(seeds=0), "seeds"),
    (lambda p: p["entries"][1].update(reasoner="graph"), "reasoner"),
    # accepted before: a claim of an entry against itself, two claims with one id, a name with '/'
    (lambda p: p["claims"][0].update(b="nl"), r"claim 1: compares entry \['nl'\] with itself"),
    (lambda p: p["claims"].append({"id": "x", "text": "t", "kind": "no_gain", "a": "fcn", "b": "nl"}),
     r"claim ids must be unique .* repeated: \['x'\]"),
    (lambda p: p.update(name="a b/c"), r"name 'a b/c' may only use letters"),
    (lambda p: p.update(claims="x"), r"'claims' must be a list"),
])
def test_plan_errors_name_the_problem(mutate, match):
    data = json.loads(json.dumps(TINY))
    mutate(data)
    with pytest.raises(PlanError, match=match):
        plan_from_dict(data, "tiny")


@pytest.mark.parametrize("entry, match", [
    ({"name": "x", "model": "nosuchmodel"}, "unknown model"),
    ({"name": "x", "model": "generic", "context": "ema", "context_kw": {"num_basis": 3}}, "num_basis"),
    # found only when the entry's run started, after the other entries had trained
    ({"name": "x", "model": "pspnet", "kwargs": {"chanels": 8}}, r"entry 'x': its model cannot be built: .*'chanels'"),
    ({"name": "x", "model": "pspnet", "context": "ema"}, r"entry 'x': its model cannot be built: .*'context'"),
    ({"name": "x", "model": "fcn", "kwargs": {"dilation": 0}}, r"entry 'x': its model cannot be built: .*dilation"),
    ({"name": "x", "model": "fcn", "reasoner": "identity"}, r"entry 'x': its model cannot be built: .*no LowRankBlock"),
])
def test_validation_catches_bad_entries_before_running(entry, match):
    data = json.loads(json.dumps(TINY))
    data["entries"].append(entry)
    plan = plan_from_dict(data, "tiny")
    with pytest.raises(PlanError, match=match):
        validate_plan(plan, "synthetic")


@pytest.mark.parametrize("where, key", [("extra", "model.name=pspnet"), ("extra", "train.seed=3"),
                                        ("extra", "model.kwargs.context_kw.num_bases=4"), ("set", "name")])
def test_overrides_every_run_replaces_are_refused(where, key):
    data = json.loads(json.dumps(TINY))
    extra = [key] if where == "extra" else []
    if where == "set":
        data["protocols"]["synthetic"]["set"][key] = "x"
    plan = plan_from_dict(data, "tiny")
    name = key.split("=")[0]
    with pytest.raises(PlanError, match=rf"{'--set' if extra else 'set'} {name}: each run's .* override would be dropped"):
        validate_plan(plan, "synthetic", extra)  # was: accepted, then replaced by the entry's / the seed's value


def test_a_key_repeated_in_a_plan_file_is_named(tmp_path):
    plan = tmp_path / "twice.yaml"
    plan.write_text("name: twice\nprotocols: {synthetic: {config: synthetic/fcn_r18_synthetic.yaml}}\n"
                    "entries: [{name: fcn, model: fcn}]\nclaims: []\nentries: [{name: nl, model: nonlocal}]\n")
    with pytest.raises(PlanError, match=r"twice.yaml is not valid YAML: .*duplicate key 'entries' \(first at line 3\)"):
        load_plan(str(plan))  # was: the second 'entries' kept, the first dropped silently


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["compare", "no-such-plan", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segattn compare: error:") and "survey-table" in err[0]
    assert main(["compare", "survey-table", "--dataset", "voc", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("segattn compare: error: plan 'survey-table' has no protocol for "
                                              "dataset 'voc'")  # not as the first entry's config error
    assert main(["compare", "survey-table", "--report-only", "--out", str(tmp_path / "empty")]) == 2
    assert "no finished run" in capsys.readouterr().err


@pytest.mark.parametrize("context", ["glore", "sgr", "graphrep", "latentgnn"])
def test_reasoner_ablation_keeps_shapes_and_removes_the_reasoner(context):
    from segattn import create_model
    from segattn.lowrank import IdentityReasoner, LowRankBlock

    torch.manual_seed(0)
    model = create_model("generic", num_classes=3, backbone="resnet18", aux=False, channels=32, context=context)
    before = sum(p.numel() for p in model.parameters())
    x = torch.rand(1, 3, 32, 32)
    assert ablate_reasoners(model) >= 1
    blocks = [m for m in model.modules() if isinstance(m, LowRankBlock)]
    assert blocks and all(isinstance(b.reasoner, IdentityReasoner) for b in blocks)
    assert sum(p.numel() for p in model.parameters()) < before or context == "latentgnn"
    assert model.eval()(x).shape == (1, 3, 32, 32)


def test_reasoner_ablation_refuses_a_model_without_reasoner():
    from segattn import create_model

    with pytest.raises(ValueError, match="no LowRankBlock"):
        ablate_reasoners(create_model("fcn", num_classes=3, backbone="resnet18", aux=False, channels=16))
