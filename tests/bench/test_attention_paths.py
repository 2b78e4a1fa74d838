"""benchmarks/attention_paths.py: the three paths agree and the table prints (tiny shape)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "attention_paths.py"


def test_table_for_a_tiny_shape(capsys):
    spec = importlib.util.spec_from_file_location("attention_paths_under_test", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--shape", "1", "2", "8", "4", "--dv", "8", "--rounds", "2"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    assert row.startswith("| (1, 2, 8, 4) | 8 |") and row.count("x |") == 2
