"""The published results: the pages say what the report JSON says, and the JSON's numbers recompute."""

import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"


def _publisher():
    spec = importlib.util.spec_from_file_location("publish_results", ROOT / "scripts" / "publish_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_blocks_match_the_report_json():
    pub = _publisher()
    generated = pub.blocks()
    for page in pub.PAGES.values():
        text = page.read_text()
        keys = [m.group("key") for m in pub.BLOCK.finditer(text)]
        assert keys, f"{page} has no generated block"
        assert pub.sync(text, generated) == text, f"{page}: run python scripts/publish_results.py --write"
    results_keys = {m.group("key") for m in pub.BLOCK.finditer(pub.PAGES["results"].read_text())}
    assert results_keys == set(generated) - {"readme-summary"}  # every published report is on the page


def test_no_verdict_outside_the_generated_text():
    """Hand-written prose may explain, never judge: no bold verdicts, no 'refuted' / 'supported'."""
    pub = _publisher()
    for page in pub.PAGES.values():
        prose = pub.BLOCK.sub("", page.read_text())
        found = re.findall(r"\*\*(?:holds|does not hold)\*\*|\b(?:refuted|supported|confirmed)\b", prose)
        assert not found, f"{page.name}: verdict words outside the generated blocks: {found}"


def test_every_summary_names_its_task():
    pub = _publisher()
    summary = pub.blocks()["readme-summary"]
    items = [ln for ln in summary.splitlines() if ln.startswith("- ")]
    assert len(items) == len(pub.compare_reports()) + len(pub.analysis_reports())
    for line in items:
        assert any(task in line for task in pub.TASKS.values()), line
        assert re.search(r"\d+ seeds", line), line


def _per_seed(folder, entry):
    out = {}
    for path in sorted((RESULTS / folder / "runs" / entry).glob("seed*/result.json")):
        r = json.loads(path.read_text())
        out[int(r["seed"])] = 100 * r["metrics"]["mIoU"]
    return out


def test_a_published_interval_and_adjusted_p_recompute_from_the_runs():
    """compare-survey-table-synthetic: claim 0's interval, and claim 1c's Holm-adjusted p, from the
    per-seed result.json files with scipy alone."""
    folder = "compare-survey-table-synthetic"
    report = json.loads((RESULTS / folder / "compare.json").read_text())
    claims = {c["id"]: c for c in report["claims"]}
    nl, fcn = _per_seed(folder, "nonlocal"), _per_seed(folder, "fcn")
    d = np.array([nl[s] - fcn[s] for s in sorted(nl)])
    half = sps.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    t0 = claims["0"]["tests"][0]
    assert t0["ci_low"] == pytest.approx(d.mean() - half, abs=1e-9)
    assert t0["ci_high"] == pytest.approx(d.mean() + half, abs=1e-9)
    # the family: every test of the report's statistical claims; each one-sided p from scipy's paired t-test
    raw = []
    for c in report["claims"]:
        for t in c["variants"]["all"]["tests"]:
            a, b = _per_seed(folder, t["a"]), _per_seed(folder, t["b"])
            x = np.array([a[s] - b[s] for s in sorted(a)])
            if c["kind"] == "better":
                raw.append(sps.ttest_1samp(x, 0.0, alternative="greater").pvalue)
            else:  # equivalent: TOST at the plan's margin, the larger one-sided p
                m = report["margin"]
                raw.append(max(sps.ttest_1samp(x, -m, alternative="greater").pvalue,
                               sps.ttest_1samp(x, m, alternative="less").pvalue))
    order = np.argsort(raw)
    k = len(raw)
    holm = np.empty(k)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * raw[i]))
        holm[i] = running
    t1c = claims["1c"]["tests"][0]
    assert k == 6 and t1c["p_t_adj"] == pytest.approx(holm[-1], abs=1e-12)
    t0_adj = holm[0]
    assert t0["p_t_adj"] == pytest.approx(t0_adj, rel=1e-9)
    assert t0["p_perm"] == pytest.approx(1 / 32)  # 5 seeds, all differences positive: the smallest possible
