"""Work dirs: lock, no silent overwrite, honest resume from the stored config, temp-file cleanup."""

import json
import os
import shlex
import socket
import subprocess
import sys

import pytest
import torch

from segattn.cli import main
from segattn.engine import train as train_mod
from segattn.engine.config import ConfigError
from segattn.engine.train import train
from segattn.engine.workdir import LOCK_NAME, WorkDirError, train_config
from tests.engine.standins import TinySeg, ToyDataset, tiny_config
from tests.test_cli import TRAIN


def _train(work, iters=4, callbacks=(), **sections):
    sections.setdefault("schedule", {})["iters"] = iters
    cfg = tiny_config(str(work), **sections)
    torch.manual_seed(0)
    return train(cfg, model=TinySeg(), train_set=ToyDataset(8), val_set=ToyDataset(4, seed=1, augment=False),
                 callbacks=callbacks)


def _interrupt_at(n):
    def cb(trainer, it):
        if it == n:
            trainer.stop.requested = True
    return cb


def _write_lock(work, pid, host=None):
    work.mkdir(parents=True, exist_ok=True)
    (work / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "x"}))


def test_resume_auto_without_checkpoint_is_an_error(tmp_path):
    for work in (tmp_path / "missing", tmp_path / "empty"):
        if work.name == "empty":
            work.mkdir()
        with pytest.raises(WorkDirError, match="no last.pt to resume from"):
            _train(work, train={"resume": "auto"})
    assert not (tmp_path / "missing").exists()  # nothing created
    assert os.listdir(tmp_path / "empty") == []
    work = tmp_path / "started"
    work.mkdir()
    (work / "metrics.jsonl").write_text("")  # killed before its first checkpoint
    with pytest.raises(WorkDirError, match="holds no checkpoint"):
        _train(work, train={"resume": "auto"})


def test_fresh_start_stores_config_and_says_so(tmp_path, capsys):
    _train(tmp_path / "run")
    stored = json.load(open(tmp_path / "run" / "config.json"))
    assert stored["schedule"]["iters"] == 4 and stored["train"]["work_dir"] == str(tmp_path / "run")
    assert "fresh run: iteration 0 of 4" in capsys.readouterr().err
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_resume_uses_stored_config_and_refuses_a_different_one(tmp_path, capsys):
    work = tmp_path / "run"
    summary = _train(work, iters=8, callbacks=[_interrupt_at(3)])
    assert summary["interrupted"] and summary["iteration"] == 3
    # the case: resuming without the original overrides must not stop early with exit 0
    with pytest.raises(WorkDirError, match=r"differs from the stored one: schedule.iters: 8 -> 4"):
        _train(work, iters=4, train={"resume": "auto"})
    # the stored config is what `--resume auto` without --config uses
    cfg = train_config(None, [], str(work), "auto")
    assert cfg.schedule.iters == 8 and cfg.train.resume == "auto"
    capsys.readouterr()
    summary = train(cfg, model=TinySeg(), train_set=ToyDataset(8), val_set=ToyDataset(4, seed=1, augment=False))
    assert summary["iteration"] == 8 and not summary["interrupted"]
    assert "at iteration 3 of 8" in capsys.readouterr().err


def test_resume_prints_iteration_and_allows_declared_changes(tmp_path, capsys):
    work = tmp_path / "run"
    _train(work, iters=6, callbacks=[_interrupt_at(2)])
    capsys.readouterr()
    summary = _train(work, iters=7, train={"resume": "auto", "allow_config_change": True})
    err = capsys.readouterr().err
    assert summary["iteration"] == 7
    assert "resuming" in err and "at iteration 2 of 7" in err and "schedule.iters: 6 -> 7" in err
    assert json.load(open(work / "config.json"))["schedule"]["iters"] == 7  # the new effective config


def test_resume_drops_log_records_written_after_the_checkpoint(tmp_path):
    work = tmp_path / "run"
    _train(work, iters=6, callbacks=[_interrupt_at(3)])
    with open(work / "metrics.jsonl", "a") as f:  # a run killed after logging iterations 4-5, before saving them
        f.write(json.dumps({"kind": "train", "iter": 4, "loss": 9.0}) + "\n")
        f.write(json.dumps({"kind": "train", "iter": 5, "loss": 9.0}) + '\n{"kind": "tr')
    _train(work, iters=6, train={"resume": "auto"})
    iters = [json.loads(x)["iter"] for x in open(work / "metrics.jsonl") if '"train"' in x]
    assert iters == [1, 2, 3, 4, 5, 6]


def test_non_empty_work_dir_needs_resume_or_overwrite(tmp_path, capsys):
    work = tmp_path / "run"
    _train(work, iters=2)
    (work / "notes.txt").write_text("mine")
    before = [json.loads(x) for x in open(work / "metrics.jsonl")]
    with pytest.raises(WorkDirError, match="is not empty .*--resume auto.*--overwrite"):
        _train(work, iters=3)
    assert [json.loads(x) for x in open(work / "metrics.jsonl")] == before  # untouched
    summary = _train(work, iters=3, train={"overwrite": True})
    assert summary["iteration"] == 3 and "removed the earlier run's" in capsys.readouterr().err
    assert [json.loads(x)["iter"] for x in open(work / "metrics.jsonl") if '"train"' in x] == [1, 2, 3]
    assert (work / "notes.txt").read_text() == "mine"  # not a run file: left alone
    with pytest.raises(ConfigError, match="exclude each other"):
        _train(work, train={"overwrite": True, "resume": "auto"})


def test_work_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    for work in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(WorkDirError, match="is a file|which is a file"):
            _train(work)


@pytest.mark.parametrize("flag, override", [("work_dir", "train.work_dir=B"), ("resume", "train.resume=B/last.pt"),
                                            ("init", "model.init=B")])
def test_a_flag_and_an_override_of_the_same_key_are_refused(tmp_path, flag, override):
    kwargs = {"work_dir": str(tmp_path / "A"), flag: str(tmp_path / "A")}
    with pytest.raises(WorkDirError, match=rf"--{flag.replace('_', '-')} .* and --set {override} set the same key "
                                           rf"{override.split('=')[0]}; give one of them"):
        train_config("synthetic/fcn_r18_synthetic.yaml", [override], **kwargs)  # was: each won somewhere, silently


def test_lock_refuses_a_second_run_and_cleans_stale_locks(tmp_path, capsys):
    work = tmp_path / "run"
    _write_lock(work, os.getpid())  # a live process holds it
    with pytest.raises(WorkDirError, match=f"in use by another run \\(pid {os.getpid()}"):
        _train(work)
    _write_lock(work, 1, host="another-machine")  # cannot tell from here: refuse
    with pytest.raises(WorkDirError, match="in use"):
        _train(work)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(work, dead.pid)
    capsys.readouterr()
    assert _train(work, iters=2)["iteration"] == 2
    assert "removed a stale lock" in capsys.readouterr().err
    assert not (work / LOCK_NAME).exists()


def test_temp_files_of_a_killed_save_are_removed(tmp_path, capsys):
    work = tmp_path / "run"
    _train(work, iters=4, callbacks=[_interrupt_at(2)])
    for name in (".last.pt.k2j3h4.tmp", ".best.pt.abcd.tmp", ".metrics.jsonl.x.tmp"):
        (work / name).write_bytes(b"half a file")
    (work / ".other.tmp").write_text("not ours")
    capsys.readouterr()
    _train(work, iters=4, train={"resume": "auto"})
    assert "removed 3 temporary file(s)" in capsys.readouterr().err
    assert sorted(p.name for p in work.iterdir() if p.name.endswith(".tmp")) == [".other.tmp"]


def test_class_weight_length_checked_before_the_model_is_built(tmp_path, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("the model was built")

    monkeypatch.setattr(train_mod.build, "build_model", no_model)
    cfg = tiny_config(str(tmp_path / "run"), model={"name": "fcn"}, loss={"class_weight": [1.0, 2.0]})
    with pytest.raises(ValueError, match="2 values for 3 classes"):
        train(cfg, train_set=ToyDataset(8), val_set=None)


def test_cli_interrupt_hint_works_when_pasted(tmp_path, monkeypatch, capsys):
    work = tmp_path / "my run"  # a space: the hint must quote it
    stop = {"at": 2}
    monkeypatch.setattr(train_mod.Trainer, "_stop_requested", lambda self: self.iteration >= stop["at"])
    argv = ["train", *TRAIN, "--work-dir", str(work), "--set", "schedule.iters=6"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("interrupted at iteration 2;") and "(or, the same" in x)
    short = line.split("resume with: ")[1].split("  (or, the same: ")[0]
    full = line.split("  (or, the same: ")[1].rstrip(")")
    assert shlex.split(short) == ["segattn", "train", "--work-dir", str(work), "--resume", "auto"]
    stop["at"] = 4
    assert main(shlex.split(full)[1:]) == 130  # the full command resumes (and is interrupted again)
    assert "resuming" in capsys.readouterr().err
    stop["at"] = 99
    assert main(shlex.split(short)[1:]) == 0  # the short one finishes the planned 6 iterations
    assert json.load(open(work / "summary.json"))["iteration"] == 6
    assert main(["train", "--work-dir", str(tmp_path / "none"), "--resume", "auto"]) == 2
    assert "holds no run to resume" in capsys.readouterr().err


def test_names_and_device_checked_before_any_data_is_read(tmp_path, monkeypatch):
    def no_data(*a, **k):
        raise AssertionError("the data was read")

    monkeypatch.setattr(train_mod.build, "build_datasets", no_data)
    with pytest.raises(ConfigError, match=r"model.name: got 'fcnn' \(did you mean 'fcn'\?\)"):
        train(tiny_config(str(tmp_path / "a"), model={"name": "fcnn"}))
    with pytest.raises(ConfigError, match=r"data.dataset: got 'camvidd' \(did you mean 'camvid'\?\)"):
        train(tiny_config(str(tmp_path / "b"), model={"name": "fcn"}, data={"dataset": "camvidd"}))
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="cuda"):
            train(tiny_config(str(tmp_path / "c"), model={"name": "fcn"}, train={"device": "cuda"}))
    assert not any((tmp_path / d).exists() for d in "abc")  # nothing created either


def test_unknown_model_and_dataset_keywords_are_named_before_the_work_dir_is_touched(tmp_path, monkeypatch):
    from segattn.errors import ArgumentError

    monkeypatch.setattr(train_mod.build, "build_datasets", lambda *a, **k: (_ for _ in ()).throw(AssertionError("read")))
    with pytest.raises(ConfigError, match=r"config key model.kwargs: .*model 'fcn' takes no keyword .*'chanels'"):
        train(tiny_config(str(tmp_path / "a"), model={"name": "fcn", "kwargs": {"chanels": 8}}))
    with pytest.raises(ArgumentError, match=r"dataset 'synthetic' \(config keys data.dataset_kwargs \+ "
                                            r"data.val_kwargs\) got unexpected keyword argument\(s\) 'num_sample'"):
        train(tiny_config(str(tmp_path / "b"), model={"name": "fcn"},
                          data={"dataset": "synthetic", "val_kwargs": {"num_sample": 3}}))
    assert not any((tmp_path / d).exists() for d in "ab")  # was: "fresh run" printed, the folder made and removed


def test_resume_hint_leaves_out_overrides_its_flags_carry(tmp_path):
    from segattn.engine.workdir import resume_hint

    work = str(tmp_path / "w")
    cfg = train_config("synthetic/fcn_r18_synthetic.yaml", ["train.work_dir=" + work, "schedule.iters=3"])
    hint = resume_hint(cfg, "synthetic/fcn_r18_synthetic.yaml", ["train.work_dir=" + work, "schedule.iters=3"])
    full = shlex.split(hint.split("(or, the same: ")[1].rstrip(")"))
    assert "train.work_dir=" + work not in full and "schedule.iters=3" in full  # else refused when pasted
    train_config(full[3], [full[i + 1] for i, a in enumerate(full) if a == "--set"], work_dir=work, resume="auto")
