"""`segattn compare` fan-out: -j worker processes, the submitit launcher, and --replicate."""

import json

import pytest

from segattn.cli import main
from segattn.compare import plan_from_dict, run_plan
from segattn.compare.runner import RESULT, claim_run, run_dir

from .test_compare import TINY


def _plan():
    return plan_from_dict(json.loads(json.dumps(TINY)), "tiny")


def _after_run(rdir):
    """An ``after_run`` for the workers (module-level: pickled): notes what it saw."""
    state = {"result": (rdir / RESULT).is_file(), "locked": (rdir / ".segattn.lock").is_file()}
    (rdir / "after_run.json").write_text(json.dumps(state))


@pytest.mark.slow
def test_workers_and_replicate_train_disjoint_seeds_once(tmp_path):
    out = tmp_path / "cmp"
    plan = _plan()
    held = claim_run(run_dir(out, "nl", 1))  # another live process "holds" one run: it is left alone
    try:
        summary = run_plan(plan, "synthetic", seeds=1, out=out, threads=1, workers=2, replicate=True,
                           log=lambda m: None, after_run=_after_run)
    finally:
        held.release()
    assert summary["total"] == 4 and summary["trained"] == 3 and summary["busy"] == 1
    # each run the workers trained was handed to after_run once finished, its lock still held
    seen = {p.parent.parent.name + "/" + p.parent.name: json.loads(p.read_text()) for p in out.glob("runs/*/*/after_run.json")}
    assert seen == {k: {"result": True, "locked": True} for k in ("fcn/seed0", "fcn/seed1", "nl/seed0")}
    assert sorted(p.parent.name for p in out.glob(f"runs/fcn/seed*/{RESULT}")) == ["seed0", "seed1"]
    assert not (run_dir(out, "nl", 1) / RESULT).exists()
    agg = summary["report"]["aggregate"]
    assert agg["seeds"] == 1 and agg["seed_start"] == 0
    rep = agg["replication"]
    assert rep["aggregate"]["seed_start"] == 1 and rep["aggregate"]["runs_done"] == 1
    assert rep["status"][0]["status"] in ("replicated", "not replicated", "undecided in both")
    md = (out / "compare.md").read_text()
    assert "## Replication" in md and "--replicate" in md


@pytest.mark.slow
def test_first_seed_moves_both_seed_ranges(tmp_path):
    """A pilot on seeds the published range never uses: --first-seed 100 --seeds 1 --replicate trains
    seeds 100 and 101, judges the first and replicates on the second, and says so in the command."""
    out = tmp_path / "pilot"
    summary = run_plan(_plan(), "synthetic", seeds=1, out=out, threads=1, replicate=True, first_seed=100,
                       log=lambda m: None, after_run=_after_run)
    assert len(list(out.glob("runs/*/*/after_run.json"))) == 4  # the serial path hands each run over too
    assert sorted(p.parent.name for p in out.glob(f"runs/fcn/seed*/{RESULT}")) == ["seed100", "seed101"]
    agg = summary["report"]["aggregate"]
    assert agg["seed_start"] == 100 and agg["entries"][0]["seeds"] == [100]
    assert agg["replication"]["aggregate"]["seed_start"] == 101
    assert "--first-seed 100" in agg["command"] and json.loads((out / "plan.json").read_text())["first_seed"] == 100


@pytest.mark.slow
@pytest.mark.parametrize("cluster", ["local"])
def test_submitit_launcher_runs_a_plan(tmp_path, cluster):
    pytest.importorskip("submitit")
    out = tmp_path / "cmp"
    summary = run_plan(_plan(), "synthetic", seeds=1, out=out, threads=1, launcher="slurm",
                       launcher_options={"cluster": cluster, "time_min": 10, "cpus": 1}, log=lambda m: None)
    assert summary["trained"] == 2 and summary["done"] == 2
    assert (run_dir(out, "nl", 0) / RESULT).is_file() and (out / "submitit").is_dir()
    again = run_plan(_plan(), "synthetic", seeds=1, out=out, threads=1, launcher="slurm",
                     launcher_options={"cluster": cluster}, log=lambda m: None)
    assert again["trained"] == 0 and again["skipped"] == 2  # finished runs are not submitted again


def test_cli_refuses_bad_jobs_and_launcher(tmp_path, capsys):
    assert main(["compare", "survey-table", "-j", "0", "--out", str(tmp_path / "x")]) == 2
    assert "-j must be >= 1, got 0" in capsys.readouterr().err
    assert main(["compare", "survey-table", "--first-seed", "-1", "--out", str(tmp_path / "x")]) == 2
    assert "--first-seed must be >= 0, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "survey-table", "--launcher", "pbs"])


def test_callbacks_with_workers_are_refused_before_anything_runs(tmp_path):
    from segattn.compare.plan import PlanError

    with pytest.raises(PlanError, match="callbacks run in this process only"):
        run_plan(_plan(), "synthetic", seeds=1, out=tmp_path / "cmp", workers=2, callbacks=[object()])
    assert not (tmp_path / "cmp").exists()


def test_slurm_without_srun_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no srun here
    out = tmp_path / "cmp"
    assert main(["compare", "survey-table", "--launcher", "slurm", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["segattn compare: error: --launcher slurm: no SLURM here (`srun` is not on the PATH); run on a "
                   "node of a SLURM cluster, or use --launcher local"]  # was submitit's RuntimeError
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--partition", "gpu"], "--partition applies to --launcher slurm only (this call runs --launcher local)"),
    (["--time", "5", "--gpus-per-run", "1"], "--time, --gpus-per-run apply to --launcher slurm only"),
    (["--launcher", "slurm", "--gpus-per-run", "-1"], "--gpus-per-run must be >= 0, got -1"),
    (["--report-dir", "FILE"], "--report-dir FILE is not usable: it is a file, not a folder"),
])
def test_cli_refuses_options_that_would_be_ignored_or_fail_after_the_runs(tmp_path, capsys, argv, message):
    file = tmp_path / "FILE"
    file.write_text("")
    argv = [str(file) if a == "FILE" else a for a in argv]
    message = message.replace("FILE", str(file))
    out = tmp_path / "cmp"
    assert main(["compare", "survey-table", "--report-only", "--out", str(out)] + argv) == 2  # trains nothing
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_resume_command_keeps_every_flag_that_shapes_the_result(tmp_path):
    from segattn.cli import build_parser
    from segattn.compare.cli import resume_command

    argv = ["compare", "survey-table", "--seeds", "3", "--replicate", "-j", "2", "--analyze", "--report-dir", "rep",
            "--reuse", "other", "--set", "schedule.iters=5"]
    args = build_parser().parse_args(argv)
    cmd = resume_command(args, tmp_path / "out")
    assert cmd == (f"segattn compare survey-table --dataset synthetic --out {tmp_path / 'out'} --seeds 3 --replicate "
                   "-j 2 --reuse other --analyze --report-dir rep --set schedule.iters=5")
