"""`segattn compare --reuse DIR`: finished runs of an identical config are copied from other outputs, not retrained."""

import copy
import json
import shutil

import pytest
import torch

import segattn.compare.runner as runner
from segattn.cli import main
from segattn.compare import plan_from_dict, run_plan
from segattn.compare.plan import entry_config_dict
from segattn.compare.reuse import copy_run, run_key
from segattn.compare.runner import FINAL_WEIGHTS, RESULT, RUN_CONFIG, run_dir

from .test_compare import TINY

SHORT = ["schedule.iters=2"]


def _plan_a():
    """fcn, nl (Non-local) and glore."""
    data = copy.deepcopy(TINY)
    data["entries"].append({"name": "glore", "model": "generic", "context": "glore"})
    return plan_from_dict(data, "tiny")


def _plan_b():
    """Another plan: A's fcn under another name, Non-local with other keywords, GloRe without its reasoner;
    its protocol spells out a default (``loss.name: ce``) that A leaves implicit: still the same training."""
    data = copy.deepcopy(TINY)
    data["name"] = "tiny-b"
    data["reference"] = "base"
    data["protocols"]["synthetic"]["set"]["loss.name"] = "ce"
    data["entries"] = [{"name": "base", "model": "fcn"},
                       {"name": "nl-shared", "model": "generic", "context": "nonlocal", "context_kw": {"shared_qk": True}},
                       {"name": "glore-noreason", "model": "generic", "context": "glore", "reasoner": "identity"}]
    data["claims"] = [{"id": "x", "text": "nl-shared beats base", "kind": "better", "a": "nl-shared", "b": "base"}]
    return plan_from_dict(data, "tiny-b")


@pytest.fixture(scope="module")
def plan_a_out(tmp_path_factory):
    """Plan A trained once (1 seed, 2 iterations), with an analysis.json beside its fcn run."""
    out = tmp_path_factory.mktemp("reuse") / "a"
    summary = run_plan(_plan_a(), "synthetic", seeds=1, out=out, extra=SHORT, threads=1, log=lambda m: None,
                       report=False)
    assert summary["trained"] == 3
    fcn = run_dir(out, "fcn", 0)
    (fcn / "analysis.json").write_text(json.dumps({"entry": "fcn", "checkpoint": str(fcn / FINAL_WEIGHTS),
                                                   "settings": {"version": 6, "max_images": None}}))
    return out


def _count_training(monkeypatch):
    trained = []
    real = runner.train_run

    def counting(rdir, data, entry, seed, *args, **kwargs):
        trained.append(entry.name)
        return real(rdir, data, entry, seed, *args, **kwargs)

    monkeypatch.setattr(runner, "train_run", counting)
    return trained


def test_run_key_counts_what_trains_and_nothing_else():
    plan = _plan_a()
    fcn = plan.entry("fcn")
    base = entry_config_dict(plan, "synthetic", fcn, 0, "a/runs/fcn/seed0/train", SHORT)
    base["_entry"] = {"name": "fcn", "reasoner": None}
    same = copy.deepcopy(base)
    same["name"], same["_entry"]["name"] = "other-plan-base-seed0", "base"
    same["train"].update({"work_dir": "b/runs/base/seed0/train", "threads": 4, "progress": True})
    same["loss"] = {"name": "ce"}  # an explicit default
    assert run_key(same) == run_key(base) is not None
    for path, value in ((("train", "seed"), 1), (("schedule", "iters"), 3), (("_entry", "reasoner"), "identity"),
                        (("model", "kwargs", "channels"), 8), (("optim", "lr"), 0.5)):
        other = copy.deepcopy(base)
        node = other
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        assert run_key(other) != run_key(base), path
    assert run_key({"model": {"name": 3}}) is None  # a config that does not read is never matched


@pytest.mark.slow
def test_shared_entry_is_copied_with_provenance_and_others_train(plan_a_out, tmp_path, monkeypatch):
    a = plan_a_out
    # a first --reuse folder whose fcn run lacks its weights (not finished for reuse): the match comes from `a`
    broken = tmp_path / "broken"
    shutil.copytree(a, broken)
    (run_dir(broken, "fcn", 0) / FINAL_WEIGHTS).unlink()
    out = tmp_path / "b"
    trained = _count_training(monkeypatch)
    logs = []
    summary = run_plan(_plan_b(), "synthetic", seeds=1, out=out, extra=SHORT, threads=1, log=logs.append,
                       reuse=[broken, a])
    assert sorted(trained) == ["glore-noreason", "nl-shared"]  # other keywords / reasoner: trained
    assert summary["reused"] == 1 and summary["trained"] == 2 and summary["skipped"] == 0 and summary["done"] == 3
    src, dst = run_dir(a, "fcn", 0), run_dir(out, "base", 0)
    assert f"[1/3] base seed 0: reused from {src}" in logs
    assert any("3/3 runs finished (2 trained, 1 reused, 0 finished before)" in line for line in logs)

    old, new = json.loads((src / RESULT).read_text()), json.loads((dst / RESULT).read_text())
    for key in ("metrics", "per_image", "cost", "train", "provenance", "engine_mIoU", "seed"):
        assert new[key] == old[key], key  # the training record stays the original's
    assert (new["entry"], new["plan"]) == ("base", "tiny-b")
    assert new["reused_from"]["run"] == str(src) and new["reused_from"]["entry"] == "fcn"
    assert new["reused_from"]["plan"] == "tiny" and new["reused_from"]["commit"] == old["provenance"]["commit"]
    assert new["config"]["name"] == "tiny-b-base-seed0" and new["config"]["train"]["work_dir"] == str(dst / "train")
    stored = json.loads((dst / RUN_CONFIG).read_text())
    assert stored["_entry"] == {"name": "base", "reasoner": None} and stored["train"]["work_dir"] == str(dst / "train")
    assert json.loads((dst / "train" / "config.json").read_text())["train"]["work_dir"] == str(dst / "train")
    analysis = json.loads((dst / "analysis.json").read_text())
    assert analysis["entry"] == "base" and analysis["checkpoint"] == str(dst / FINAL_WEIGHTS)
    w_old = torch.load(src / FINAL_WEIGHTS, weights_only=True)
    w_new = torch.load(dst / FINAL_WEIGHTS, weights_only=True)
    assert w_new["entry"]["name"] == "base" and w_new["config"]["name"] == "tiny-b-base-seed0"
    assert all(torch.equal(w_new["model"][k], v) for k, v in w_old["model"].items())
    assert not list(out.glob("runs/*/.*reuse*")) and not (dst / ".segattn.lock").exists()
    md = (out / "compare.md").read_text()
    assert "Reused: 1 of these runs" in md and f"`{a}`" in md
    assert summary["report"]["aggregate"]["reused"] == {"runs": 1, "from": [str(a)], "same_network": 0}

    # the copy is a finished run of this plan: skipped next time, with or without --reuse
    trained.clear()
    again = run_plan(_plan_b(), "synthetic", seeds=1, out=out, extra=SHORT, threads=1, log=logs.append,
                     reuse=[a], report=False)
    assert trained == [] and again["reused"] == 0 and again["skipped"] == 3
    plain = run_plan(_plan_b(), "synthetic", seeds=1, out=out, extra=SHORT, threads=1, log=logs.append, report=False)
    assert plain["trained"] == 0 and plain["skipped"] == 3
    # and a finished run is never replaced by a copy
    with pytest.raises(ValueError, match="finished run already"):
        copy_run(src, dst, stored, _plan_b(), "synthetic", _plan_b().entry("base"))


@pytest.mark.slow
def test_workers_get_only_what_must_train(plan_a_out, tmp_path):
    out = tmp_path / "b"
    logs = []
    summary = run_plan(_plan_b(), "synthetic", seeds=1, out=out, extra=SHORT, threads=1, workers=2,
                       log=logs.append, reuse=[plan_a_out], report=False)
    assert summary["reused"] == 1 and summary["trained"] == 2 and summary["done"] == 3 and summary["skipped"] == 0
    assert json.loads((run_dir(out, "base", 0) / RESULT).read_text())["reused_from"]["entry"] == "fcn"
    for name in ("nl-shared", "glore-noreason"):
        assert "reused_from" not in json.loads((run_dir(out, name, 0) / RESULT).read_text())
    assert not any(line.startswith("[") and "base seed 0: mIoU" in line for line in logs)  # no worker trained it


def test_bad_reuse_folders_are_one_line_before_anything(tmp_path, capsys):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    out_too = tmp_path / "same"
    (out_too / "runs").mkdir(parents=True)
    cases = [(tmp_path / "missing", out, "no such folder"), (a_file, out, "is a file"),
             (empty, out, "is not a `segattn compare` output: it has no runs/ folder"),
             (out_too, out_too, "is the --out folder itself")]
    for reuse, target, fragment in cases:
        code = main(["compare", "survey-table", "--seeds", "1", "--out", str(target), "--reuse", str(reuse)])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and "Traceback" not in err, err
        assert len(lines) == 1 and lines[0].startswith("segattn compare: error: --reuse ") and fragment in lines[0], err
    assert not out.exists() and sorted(p.name for p in out_too.iterdir()) == ["runs"]  # nothing written
    code = main(["compare", "survey-table", "--report-only", "--out", str(out), "--reuse", str(out_too)])
    assert code == 2 and "use one or the other" in capsys.readouterr().err
