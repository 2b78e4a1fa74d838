"""`segattn compare PLAN --analyze` end to end on a tiny plan, and `segattn analyze`'s refusals."""

import json

import pytest
import torch

from segattn.cli import main

TINY_SET = {
    "schedule.iters": 3, "schedule.warmup_iters": 0, "data.batch_size": 2, "data.val_batch_size": 2,
    "model.kwargs.channels": 16, "train.log_interval": 1, "train.ckpt_interval": 1,
    "data.dataset_kwargs": {"size": [32, 32], "num_classes": 3, "blob_size": [8, 10], "margin": 8, "cue_size": 6,
                            "num_blobs": [1, 2]},
    "data.train_kwargs.num_samples": 8, "data.val_kwargs.num_samples": 4,
    "eval.scales": [0.5],  # evaluated smaller than the images, as the CamVid protocol: analyze must follow
}
PLAN = {
    "name": "tiny-analyze", "reference": "fcn", "seeds": 2, "margin": 1.0,
    "protocols": {"synthetic": {"config": "synthetic/fcn_r18_synthetic.yaml", "set": TINY_SET}},
    "entries": [{"name": "fcn", "model": "fcn"},
                {"name": "ema-T1", "model": "generic", "context": "ema", "context_kw": {"num_bases": 4, "num_stages": 1}},
                {"name": "ema-T3", "model": "generic", "context": "ema", "context_kw": {"num_bases": 4, "num_stages": 3}}],
}


@pytest.mark.slow
def test_compare_keeps_weights_and_analyze_reports_claims(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    out, rep = tmp_path / "cmp", tmp_path / "published"
    # -j 2: two processes train, then two measure (this one and a spawned helper, sharing the run locks)
    assert main(["compare", str(plan), "--out", str(out), "--analyze", "--report-dir", str(rep), "-j", "2"]) == 0
    # each run was measured by its worker as soon as it finished: the step after the runs measures nothing
    assert capsys.readouterr().out.count("stored analysis reused") == 6
    for entry in ("fcn", "ema-T1", "ema-T3"):
        for seed in (0, 1):
            rdir = out / "runs" / entry / f"seed{seed}"
            weights = torch.load(rdir / "final.pt", weights_only=True)
            assert set(weights) == {"model", "config", "meta", "entry"} and weights["entry"]["name"] == entry
            assert not list(rdir.glob("train/*.pt"))  # training checkpoints still go
            result = json.loads((rdir / "result.json").read_text())
            analysis = json.loads((rdir / "analysis.json").read_text())
            # same weights, same validation images, same whole-image forward: the same mIoU
            assert analysis["miou_clean"] == pytest.approx(100 * result["metrics"]["mIoU"], abs=1e-9)
            assert (rep / "runs" / entry / f"seed{seed}" / "analysis.json").is_file()
    agg = json.loads((rep / "analysis.json").read_text())
    ids = {c["id"] for c in agg["claims"]}
    assert {"1r.ema-T1", "2d.ema-T1", "3w.ema-T3", "5f.ema-T3", "5s.ema-T3", "6q.ema-T3"} <= ids
    assert all(c["verdict"] in ("holds", "does not hold", "cannot tell") for c in agg["claims"])
    md = (rep / "analysis.md").read_text()
    assert "--analyze" in md and "## EM iterations" in md and "## Claims" in md
    fcn = next(e for e in agg["entries"] if e["name"] == "fcn")
    assert fcn["module"] == "identity" and fcn["metrics"]["within_ratio"]["mean"] == pytest.approx(1.0)
    # a helper process alone measures every run and stores it (what `-j` adds to the analysis)
    from segattn.analyze.run import _helpers

    runs = sorted(out.glob("runs/*/seed*"))
    stored = {r: json.loads((r / "analysis.json").read_text()) for r in runs}
    for r in runs:
        (r / "analysis.json").unlink()
    with _helpers(1, runs, 1) as done:
        pass
    done()
    for r in runs:
        again = json.loads((r / "analysis.json").read_text())
        assert again["miou_clean"] == stored[r]["miou_clean"] and again["erank_in"] == pytest.approx(stored[r]["erank_in"])
    # final.pt is an ordinary checkpoint: `segattn eval` reads it, `segattn analyze` takes the file itself
    final = out / "runs" / "ema-T3" / "seed1" / "final.pt"
    assert main(["eval", "--checkpoint", str(final), "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["mIoU"] == pytest.approx(
        json.loads((final.parent / "result.json").read_text())["metrics"]["mIoU"], abs=1e-12)
    assert main(["analyze", str(final), "--out", str(tmp_path / "file"), "--max-images", "2"]) == 0
    one = json.loads((tmp_path / "file" / "analysis.json").read_text())["per_run"][0]
    assert one["entry"] == "ema-T3" and one["em_stages"] == 3 and one["images"] == 2
    # stored analyses are reused: a second call measures nothing
    capsys.readouterr()
    assert main(["analyze", str(out), "--out", str(tmp_path / "again")]) == 0
    assert "stored analysis reused" in capsys.readouterr().out
    # an analysis of the previous version is brought up to date by redoing only the changed steps, and
    # equals one made afresh (the survey step draws from its own generator)
    from segattn.analyze.run import UPGRADE, VERSION, analyze_run

    old_version, redo = next((v, steps) for v, steps in UPGRADE.items() if v == VERSION - 1)
    rdir = out / "runs" / "ema-T1" / "seed0"
    fresh = json.loads((rdir / "analysis.json").read_text())
    stale = {k: v for k, v in fresh.items() if not k.startswith(("roughness_", "bases_recon_error_"))}
    stale["settings"] = {"version": old_version, "max_images": None}
    stale["miou_clean"] = -1.0  # a number of a kept step: kept as stored, not measured again
    (rdir / "analysis.json").write_text(json.dumps(stale))
    lines = []
    again = analyze_run(rdir, log=lines.append)
    assert [line.split(" (")[0] for line in lines] == [f"analyze {step}" for step in redo]
    assert again["miou_clean"] == -1.0 and again["settings"]["version"] == VERSION
    for key, value in fresh.items():
        if key not in ("miou_clean", "seconds") and isinstance(value, float):
            assert again[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key
    stale["settings"] = {"version": min(UPGRADE) - 1, "max_images": None}  # older still: made afresh
    (rdir / "analysis.json").write_text(json.dumps(stale))
    lines.clear()
    assert analyze_run(rdir, log=lines.append)["miou_clean"] == fresh["miou_clean"] and len(lines) == 6


def test_analyze_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "missing.pt")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
    (tmp_path / "runs" / "x" / "seed0").mkdir(parents=True)
    assert main(["analyze", str(tmp_path)]) != 0
    assert "final.pt" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path), "--max-images", "0"]) != 0
    assert "--max-images" in capsys.readouterr().err


def test_processes_share_the_analysis_of_one_compare_folder(tmp_path, monkeypatch):
    """A run whose folder lock a live process holds is left to it: this process measures the others,
    waits, then reads the stored analysis instead of measuring the run again; a dead owner's lock is
    taken over."""
    import os
    import socket
    import subprocess
    import sys

    from segattn.analyze import run as R

    for entry in ("a", "b", "c"):
        (tmp_path / "runs" / entry / "seed0").mkdir(parents=True)
        (tmp_path / "runs" / entry / "seed0" / "final.pt").write_bytes(b"")
    held, orphan = tmp_path / "runs" / "b" / "seed0", tmp_path / "runs" / "c" / "seed0"
    host = socket.gethostname()
    (held / ".segattn.lock").write_text(json.dumps({"pid": os.getpid(), "host": host, "started": "now"}))
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    (orphan / ".segattn.lock").write_text(json.dumps({"pid": dead, "host": host, "started": "then"}))
    measured, logs, reported = [], [], []

    def fake_analyze_run(p, max_images, threads, log, force, tag):
        stored = p / R.ANALYSIS
        if stored.is_file():
            return json.loads(stored.read_text())
        assert (p / ".segattn.lock").is_file()  # measured under the lock
        measured.append(p.parent.name)
        stored.write_text(json.dumps({"entry": p.parent.name}))
        return {"entry": p.parent.name}

    def other_process_finishes(seconds):  # the owner of b stores its analysis and lets go
        (held / R.ANALYSIS).write_text(json.dumps({"entry": "b", "by": "other"}))
        (held / ".segattn.lock").unlink()

    monkeypatch.setattr(R, "_checkpoint", lambda p: (p, {}, None))  # the runs' configs are not read here
    monkeypatch.setattr(R, "eval_scale", lambda cfg: 1.0)
    monkeypatch.setattr(R, "analyze_run", fake_analyze_run)
    monkeypatch.setattr(R.time, "sleep", other_process_finishes)
    monkeypatch.setattr("segattn.analyze.report.write_report",
                        lambda results, out, command, split=None: reported.append(results) or {"paths": {"markdown": "x"}})
    R.analyze_runs([tmp_path], tmp_path / "report", "cmd", log=logs.append, poll_s=0.0)
    assert measured == ["a", "c"]  # b left to its owner, c's dead owner's lock taken over
    assert [r["entry"] for r in reported[0]] == ["a", "b", "c"] and reported[0][1]["by"] == "other"
    assert any("left to it" in m for m in logs) and any("waiting for 1 run" in m for m in logs)
    assert not any((p / ".segattn.lock").exists() for p in (tmp_path / "runs").glob("*/seed0"))


def test_a_helper_refuses_when_the_analysis_version_changed_under_its_parent(tmp_path):
    from segattn.analyze.run import VERSION, _helper_measure
    from segattn.errors import SegattnError

    with pytest.raises(SegattnError, match=f"version {VERSION - 1} when it started, {VERSION} now"):
        _helper_measure([tmp_path / "runs" / "a" / "seed0"], 1, VERSION - 1)
    assert not list(tmp_path.iterdir())  # nothing measured or written


def test_analyze_step_follows_the_first_seed(tmp_path, monkeypatch):
    """`compare --first-seed 5 --seeds 1 --replicate --analyze` measures seeds 5 and 6 (not 0) and
    judges the replication from seed 6 on."""
    from types import SimpleNamespace

    from segattn.analyze import run as R
    from segattn.compare import plan_from_dict

    for seed in (0, 5, 6):
        rdir = tmp_path / "runs" / "fcn" / f"seed{seed}"
        rdir.mkdir(parents=True)
        (rdir / "final.pt").write_bytes(b"")
        (rdir / "result.json").write_text("{}")
    seen = {}
    monkeypatch.setattr(R, "analyze_runs", lambda runs, target, cmd, **kw: seen.update(runs=runs, cmd=cmd, **kw))
    args = SimpleNamespace(seeds=1, replicate=True, first_seed=5, plan="tiny-analyze", dataset="synthetic",
                           report_dir=None, jobs=1, threads=1)
    R.analyze_plan(args, plan_from_dict(json.loads(json.dumps(PLAN)), "tiny"), tmp_path)
    assert [p.name for p in seen["runs"]] == ["seed5", "seed6"] and seen["split"] == 6
    assert "--first-seed 5" in seen["cmd"]


def test_a_run_archived_without_its_weights_counts_by_its_stored_analysis(tmp_path, monkeypatch):
    """A run folder whose weights were dropped after it was measured (an archived run) is read from its
    analysis.json of this version; one whose stored analysis is of another version, or that holds
    neither, cannot count: named in one error, or left out of a compare folder's runs."""
    from segattn.analyze import run as R
    from segattn.errors import SegattnError

    current = {"entry": "b", "settings": {"version": R.VERSION, "max_images": None}}
    old = {"entry": "c", "settings": {"version": R.VERSION - 1, "max_images": None}}
    runs = {name: tmp_path / "runs" / name / "seed0" for name in "abcd"}
    for rdir in runs.values():
        rdir.mkdir(parents=True)
        (rdir / "result.json").write_text("{}")
    (runs["a"] / "final.pt").write_bytes(b"")
    (runs["b"] / R.ANALYSIS).write_text(json.dumps(current))
    (runs["c"] / R.ANALYSIS).write_text(json.dumps(old))
    assert R.expand_runs([tmp_path]) == [runs["a"], runs["b"]]

    reported = []
    monkeypatch.setattr("segattn.analyze.report.write_report",
                        lambda results, out, command, split=None: reported.append(results) or {"paths": {"markdown": "x"}})
    R.analyze_runs([runs["b"]], tmp_path / "report", "cmd", log=lambda m: None)  # no weights loaded
    assert reported == [[current]]
    for name, force in (("c", False), ("d", False), ("b", True)):
        with pytest.raises(SegattnError, match="holds no final.pt"):
            R.analyze_runs([runs[name]], tmp_path / "report", "cmd", force=force, log=lambda m: None)

    seen = {}
    monkeypatch.setattr(R, "analyze_runs", lambda found, target, cmd, **kw: seen.update(runs=found))
    from types import SimpleNamespace

    from segattn.compare import plan_from_dict

    plan = dict(PLAN, entries=[{"name": n, "model": "fcn"} for n in "abcd"], seeds=1, reference="a")
    args = SimpleNamespace(seeds=1, replicate=False, first_seed=0, plan="p", dataset="synthetic", report_dir=None,
                           jobs=1, threads=1)
    R.analyze_plan(args, plan_from_dict(plan, "p"), tmp_path)
    assert seen["runs"] == [runs["a"], runs["b"]]


def test_a_failed_measurement_after_a_run_is_one_line_and_lets_the_plan_go_on(tmp_path):
    from segattn.analyze.run import measure_finished_run

    rdir = tmp_path / "runs" / "fcn" / "seed0"
    rdir.mkdir(parents=True)  # no final.pt: the measurement fails
    lines = []
    assert measure_finished_run(rdir, log=lines.append) is None
    assert len(lines) == 1 and lines[0].startswith("fcn seed0: analysis failed (") and "final.pt" in lines[0]
    assert "the --analyze step after the runs tries again" in lines[0]


def test_the_analysis_leaves_out_same_as_entries(tmp_path, monkeypatch):
    """Their runs are copies of their twins': the same numbers would enter the Holm family twice."""
    from types import SimpleNamespace

    from segattn.analyze import run as R
    from segattn.compare import plan_from_dict

    plan = dict(PLAN, entries=PLAN["entries"] + [dict(PLAN["entries"][1], name="ema-copy", same_as="ema-T1")])
    for name in ("fcn", "ema-T1", "ema-T3", "ema-copy"):
        rdir = tmp_path / "runs" / name / "seed0"
        rdir.mkdir(parents=True)
        (rdir / "final.pt").write_bytes(b"")
        (rdir / "result.json").write_text("{}")
    seen = {}
    monkeypatch.setattr(R, "analyze_runs", lambda runs, target, cmd, **kw: seen.update(runs=runs))
    args = SimpleNamespace(seeds=1, replicate=False, first_seed=0, plan="p", dataset="synthetic", report_dir=None,
                           jobs=1, threads=1)
    R.analyze_plan(args, plan_from_dict(plan, "p"), tmp_path)
    assert [p.parent.name for p in seen["runs"]] == ["fcn", "ema-T1", "ema-T3"]
