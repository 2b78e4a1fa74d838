import json

import pytest

from segattn.bench.cli import parse_size
from segattn.bench.measure import BenchSetting, peak_memory_mb, time_modules
from segattn.bench.report import markdown_table, write_report
from segattn.cli import main

SETTING = BenchSetting(in_channels=16, height=12, width=10, rounds=3)


def test_time_modules_side_by_side(tmp_path):
    results = time_modules(["nonlocal", "ppm"], SETTING)
    for r in results.values():
        assert not r.error
        assert len(r.latency_all_ms) == 3 and r.latency_ms > 0
        assert r.params > 0 and r.macs > 0
    table = markdown_table(results, SETTING, baseline="nonlocal")
    assert "| nonlocal |" in table and "time ratio" in table and "1.00" in table
    paths = write_report(results, SETTING, tmp_path, baseline="nonlocal")
    data = json.loads(paths["json"].read_text())
    assert {r["name"] for r in data["results"]} == {"nonlocal", "ppm"}
    assert paths["csv"].read_text().startswith("name,params,macs")


def test_failure_is_reported_not_raised():
    results = time_modules(["nonlocal"], BenchSetting(in_channels=16, dtype="float32", device="no_such_device"))
    assert results["nonlocal"].error


def test_peak_memory_grows_with_size():
    small = peak_memory_mb("nonlocal", BenchSetting(in_channels=16, height=8, width=8))
    large = peak_memory_mb("nonlocal", BenchSetting(in_channels=64, height=96, width=96, backward=True))
    assert 0 <= small < large
    assert large > 64 * 96 * 96 * 4 / 2**20  # at least the input's gradient (2.25 MiB)


def test_parse_size():
    assert parse_size("64") == (64, 64) and parse_size("65x97") == (65, 97)
    with pytest.raises(Exception, match="65x97"):
        parse_size("big")


def test_cli_bench_and_modules(tmp_path, capsys):
    assert main(["bench", "nonlocal", "--channels", "8", "--size", "9x7", "--rounds", "2", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "bench.md").exists()
    assert main(["modules", "nonlocal*"]) == 0
    out = capsys.readouterr().out
    assert "nonlocal_dot" in out
    assert main(["bench", "zzz*"]) == 2
    assert "segattn bench: error: no registered module" in capsys.readouterr().err


def test_cli_bench_memory_only_runs_no_timing(capsys, monkeypatch):
    import segattn.bench.cli as cli

    monkeypatch.setattr(cli, "time_modules", lambda *a, **k: pytest.fail("timed although --memory-only"))
    assert main(["bench", "nonlocal", "danet_pam", "--channels", "8", "--size", "9x7", "--memory-only"]) == 0
    out = capsys.readouterr().out
    assert "not timed (one step per module for memory)" in out
    row = next(line for line in out.splitlines() if line.startswith("| danet_pam |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "-" and float(cells[4]) >= 0 and cells[5] == "-"  # no latency, a memory figure, no time ratio


def test_a_failed_memory_probe_is_reported_in_its_row(capsys, monkeypatch):
    import segattn.bench.cli as cli

    def probe(name, setting):
        if name == "danet_pam":
            raise RuntimeError("memory probe for 'danet_pam' was killed by signal 9 (out of memory?)")
        return 1.0

    monkeypatch.setattr(cli, "peak_memory_mb", probe)
    assert main(["bench", "nonlocal", "danet_pam", "--channels", "8", "--size", "9x7", "--memory-only"]) == 0
    out = capsys.readouterr().out
    assert "| danet_pam | - | - | failed: memory probe for 'danet_pam' was killed by signal 9" in out
    assert "| nonlocal | 0.00 |" in out  # the other module still measured
