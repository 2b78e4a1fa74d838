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
