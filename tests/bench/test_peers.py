"""benchmarks/peers.py without mmseg: the ratio table, the mmcv._ext placeholder, argument errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "peers.py"


def load():
    spec = importlib.util.spec_from_file_location("peers_under_test", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_table_ratios_and_errors():
    peers = load()
    results = {
        ("nonlocal", 64, "eval", "ours"): {"ms": [50.0, 70.0], "peak_mb": [10.0]},
        ("nonlocal", 64, "eval", "mmseg"): {"ms": [100.0, 120.0], "peak_mb": [40.0]},
        ("psa_head", 64, "eval", "ours"): {"ms": [5.0], "peak_mb": [1.0]},
        ("psa_head", 64, "eval", "mmseg"): {"ms": [], "peak_mb": [], "error": "needs a compiled op (PSAMask)"},
    }
    text = peers.table(results, ["nonlocal", "psa_head"], [64], ["eval"])
    assert "| nonlocal | 64x64 | eval | 60 | 110 | 0.55x | 10 | 40 | 0.25x |" in text
    assert "needs a compiled op (PSAMask)" in text
    assert peers.short_error("ValueError: Expected more than 1 value per channel when training").startswith("cannot")


def test_ext_placeholder_raises_only_when_called(monkeypatch):
    peers = load()
    monkeypatch.delitem(sys.modules, "mmcv._ext", raising=False)
    peers.install_ext_placeholder()
    ext = sys.modules["mmcv._ext"]
    assert hasattr(ext, "psamask_forward")
    with pytest.raises(RuntimeError, match="compiled op"):
        ext.psamask_forward()
    monkeypatch.delitem(sys.modules, "mmcv._ext")


def test_bad_case_is_one_clear_error(capsys):
    peers = load()
    with pytest.raises(SystemExit) as exc:
        peers.main(["--cases", "nope"])
    assert exc.value.code == 2
    assert "unknown case" in capsys.readouterr().err


def test_out_is_written_after_every_process_and_resumed(tmp_path, monkeypatch, capsys):
    import subprocess

    peers = load()
    monkeypatch.setattr(peers.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout="1.2.2\n", stderr=""))
    calls = []

    def fake_worker(python, impl, case, size, mode, reps, threads, timeout, batch=1, measure="time"):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is stopped during its fourth process
        calls.append((impl, case, size, mode))
        return {"ms": 10.0 if impl == "ours" else 20.0, "peak_mb": 5.0}

    monkeypatch.setattr(peers, "run_worker", fake_worker)
    out = tmp_path / "peers.json"
    args = ["--cases", "nonlocal", "ccnet", "--sizes", "64", "--modes", "eval", "--rounds", "2", "--out", str(out)]
    with pytest.raises(KeyboardInterrupt):
        peers.main(args)
    import json

    assert len(json.loads(out.read_text())["records"]) == 3  # what finished is on disk
    with pytest.raises(SystemExit):  # an existing --out is never overwritten
        peers.main(args)
    assert "--resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # other settings than the recorded run's
        peers.main(args + ["--resume", "--threads", "2"])
    assert "was run with" in capsys.readouterr().err
    calls.clear()
    monkeypatch.setattr(peers, "run_worker", lambda *a, **k: calls.append(a) or {"ms": 10.0 if a[1] == "ours" else 20.0,
                                                                                 "peak_mb": 5.0})
    assert peers.main(args + ["--resume"]) == 0
    assert len(calls) == 8 - 3  # 2 rounds x 2 cases x 2 implementations, 3 kept
    text = capsys.readouterr().out
    assert "3 of 8 processes already measured" in text
    assert "| ccnet | 64x64 | eval | 10 | 20 | 0.50x | 5 | 5 | 1.00x |" in text
    assert len(json.loads(out.read_text())["records"]) == 8


def test_tensor_table():
    peers = load()
    results = {("isa_head", 64, "eval", "ours"): {"live_mb": [48.0]},
               ("isa_head", 64, "eval", "mmseg"): {"live_mb": [50.0]}}
    text = peers.tensor_table(results, ["isa_head"], [64], ["eval"])
    assert "| isa_head | 64x64 | eval | 48.0 | 50.0 | 0.96x |" in text


def test_worker_measures_live_tensors_of_ours_without_mmseg():
    peers = load()
    res = peers.worker("ours", "danet_cam", 16, "train", 1, 1, 1, "tensors")
    assert set(res) == {"live_mb"} and 0 < res["live_mb"] < 10
