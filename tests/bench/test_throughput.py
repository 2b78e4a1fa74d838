"""bench's executed MACs (what the fast path runs) and achieved GMAC/s against the matmul rate."""

from __future__ import annotations

from segattn.api import create_module
from segattn.bench.measure import BenchResult, BenchSetting, add_throughput, executed_macs, matmul_rate
from segattn.bench.report import achieved_gmacs, markdown_table


def test_executed_macs_see_the_padding_of_fused_kernels():
    c = 32
    setting = BenchSetting(in_channels=c, height=5, width=6, batch=2)
    # DANet PAM (d = C/8): its forward takes the chunked exact path, which executes the algorithm's MACs
    assert executed_macs("danet_pam", setting) == 2 * create_module("danet_pam", c).flops(5, 6)
    assert executed_macs("nonlocal", setting) == 2 * create_module("nonlocal", c).flops(5, 6)  # d = dv
    # ISA's long/short-range attention (d = C/2 < dv = C) pads query/key to C for the fused kernel
    isa = create_module("isa", c)
    assert executed_macs("isa", BenchSetting(in_channels=c, height=16, width=16)) > isa.flops(16, 16)


def test_table_reports_achieved_rate_against_matmul():
    setting = BenchSetting(in_channels=16, height=4, width=4, rounds=1, backward=True)
    results = {"nonlocal": BenchResult("nonlocal", 10, 1000, latency_ms=2.0)}
    rate = add_throughput(results, setting)
    assert rate > 0 and matmul_rate(setting, size=64, repeats=1) > 0
    assert results["nonlocal"].executed_macs == create_module("nonlocal", 16).flops(4, 4)
    assert achieved_gmacs(results["nonlocal"], setting) == results["nonlocal"].executed_macs * 3 / 2e6
    text = markdown_table(results, setting, None, rate)
    assert "achieved GMAC/s" in text and f"{rate:.1f} GMAC/s" in text
    assert "achieved" not in markdown_table(results, setting, None, None)  # without a rate: the old table
