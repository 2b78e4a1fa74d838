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
    explanation_keys = {k for k in generated if k.startswith("explanation.")}
    assert results_keys == set(generated) - {"readme-summary", "readme-scorecard", "validation"} - explanation_keys  # every published report is on the page
    # one page per explanation, each holding exactly its own block
    assert explanation_keys == {f"explanation.{n}" for n in pub.EXPLANATIONS} == {
        k for k in pub.PAGES if k.startswith("explanation.")}
    for key in explanation_keys:
        assert [m.group("key") for m in pub.BLOCK.finditer(pub.PAGES[key].read_text())] == [key], key


def test_every_control_belongs_to_an_explanation():
    pub = _publisher()
    assert set(pub.EXPLANATION_PAGES) == set(pub.EXPLANATIONS) == set(pub.MEASURE)
    for explanation, name, *_ in pub.CONTROLS:
        assert explanation in pub.EXPLANATIONS, f"control {name!r} is on no explanation page"


def test_check_fails_when_a_generated_block_is_edited_by_hand(tmp_path, monkeypatch):
    """Every page with generated blocks (results, README, the six explanation pages): a copy passes
    ``--check``; the same copy with one block's text changed by hand fails it, and ``--write`` restores it."""
    pub = _publisher()
    copies = {}
    for key, page in pub.PAGES.items():
        copies[key] = tmp_path / f"{key}.md"
        copies[key].write_text(page.read_text())
    monkeypatch.setattr(pub, "PAGES", copies)
    assert pub.main(["--check"]) == 0
    for key, copy in copies.items():
        original = copy.read_text()
        m = next(pub.BLOCK.finditer(original))
        edited = original[:m.start("body")] + "holds, says a hand.\n" + original[m.start("body"):]
        copy.write_text(edited)
        assert pub.main(["--check"]) == 1, f"{key}: a hand-edited block passed --check"
        assert pub.main(["--write"]) == 0 and copy.read_text() == original, key


def test_no_verdict_outside_the_generated_text():
    """Hand-written prose may explain, never judge: no bold verdicts, no 'refuted' / 'supported'."""
    pub = _publisher()
    for page in pub.PAGES.values():
        prose = pub.BLOCK.sub("", page.read_text())
        found = re.findall(r"\*\*(?:holds|does not hold)\*\*|\b(?:refuted|supported|confirmed)\b", prose)
        assert not found, f"{page.name}: verdict words outside the generated blocks: {found}"


def test_every_summary_names_its_task():
    """Each report's block on the results page opens with one sentence naming its task and seeds."""
    pub = _publisher()
    blocks = pub.blocks()
    firsts = [blocks[f"compare.{f.name}"].splitlines()[0] for f in pub.compare_reports()]
    firsts += [blocks[f"analysis.{f.name}"].splitlines()[0] for f in pub.analysis_reports()]
    assert len(firsts) == len(pub.compare_reports()) + len(pub.analysis_reports())
    for line in firsts:
        assert any(task in line for task in pub.TASKS.values()), line
        assert re.search(r"\d+ seeds", line), line


def _per_seed(folder, entry, seeds=range(8)):
    """mIoU per seed of the first seed range (the replication range is judged apart)."""
    out = {}
    for path in sorted((RESULTS / folder / "runs" / entry).glob("seed*/result.json")):
        r = json.loads(path.read_text())
        if int(r["seed"]) in seeds:
            out[int(r["seed"])] = 100 * r["metrics"]["mIoU"]
    return out


def test_a_published_interval_and_adjusted_p_recompute_from_the_runs():
    """survey-table-synthetic (seeds 0..7): claim 0's interval, and claim 1c's Holm-adjusted p, from the
    per-seed result.json files with scipy alone."""
    folder = "survey-table-synthetic"
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
    assert t0["p_perm"] == pytest.approx(1 / 256)  # 8 seeds, all differences positive: the smallest possible


# ------------------------------------------------------------------ explanation pages from an analysis
def _runs(seeds, version=None, box3_denoise=0.2):
    """Per-run analyses of a small plan with known values: a no-context entry, Non-local, EMA T = 1 / 3."""
    from segattn.analyze.run import VERSION

    version = VERSION if version is None else version
    rng = np.random.default_rng(0)
    out = []
    for seed in seeds:
        for entry, module, t in (("fcn", "identity", None), ("nonlocal", "nonlocal", None), ("ema-T1", "ema", 1),
                                 ("ema-T3", "ema", 3)):
            ctx = module != "identity"
            r = {"entry": entry, "seed": seed, "module": module, "em_stages": t,
                 "settings": {"version": version, "max_images": None},
                 "miou_clean": (60.0 if not ctx else 90.0) + rng.normal(0, 0.3),
                 "erank_in": 20.0, "erank_path": 20.0 if not ctx else 2.0 + rng.uniform(0, 1),
                 "fisher_gain_path": 1.0 if not ctx else 3.0 + rng.uniform(0, 1),
                 "denoise_index_identity": 1.0, "denoise_index_box3": box3_denoise,
                 "denoise_index_out": 1.0 if not ctx else 0.5 + rng.uniform(0, 0.1), "denoise_index_path": 0.3,
                 "roughness_in": 0.8, "roughness_out": 0.8 if not ctx else 0.4, "roughness_ebox7": 0.4,
                 "boundary_contrast_in": 2.0, "boundary_contrast_out": 2.0 if not ctx else 2.2,
                 "boundary_contrast_box3": 1.0, "boundary_contrast_ebox7": 8.0}
            out.append(r)
    return out


def _publish_analysis(folder, results, split=None, dataset="relational"):
    from segattn.analyze.report import aggregate

    folder.mkdir(parents=True)
    agg = aggregate(results, split)
    agg["command"] = f"segattn compare survey-table --dataset {dataset} --analyze"
    agg["per_run"] = results
    (folder / "analysis.json").write_text(json.dumps(agg))
    (folder / "plan.json").write_text(json.dumps({"plan": "survey-table", "dataset": dataset, "seeds": 8}))
    return agg


def test_explanation_block_from_a_current_analysis(tmp_path):
    """The block lists the version-7 analysis with its task, seeds, controls, and every claim of the
    explanation with the verdicts, the value's interval (recomputed here with scipy), Holm and sign-flip p
    and the replication status; the older analysis is named with its command."""
    pub = _publisher()
    current = tmp_path / "docs" / "results" / "st-relational"
    agg = _publish_analysis(current, _runs(range(16)), split=8)
    old = tmp_path / "docs" / "results" / "st-old"
    _publish_analysis(old, _runs(range(3), version=6), dataset="synthetic")
    page = tmp_path / "docs" / "explanations" / "low-rank.md"
    block = pub.explanation_block("1", [current, old], page)
    assert pub.TASKS["relational"] in block and "8 seeds" in block
    assert "replication on the seeds from 8 on (32 run(s))" in block
    assert "its controls passed (1 of 1 measured" in block
    assert "[`st-relational/analysis.md`](../results/st-relational/analysis.md)" in block
    claims = {c["id"]: c for c in agg["claims"] if c["explanation"] == "1"}
    assert set(claims) == {f"{k}.{e}" for k in ("1r", "1f") for e in ("nonlocal", "ema-T1", "ema-T3")}
    rows = {ln.split(":")[0].lstrip("| "): ln for ln in block.splitlines() if ln.startswith("| 1")}
    assert set(rows) == set(claims)
    # 1r.nonlocal: erank path / in on seeds 0..7, a ratio: the geometric mean and the t-interval of its
    # logarithm, from the runs alone
    x = np.log([r["erank_path"] / r["erank_in"] for r in _runs(range(8)) if r["entry"] == "nonlocal"])
    half = sps.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    cells = [c.strip() for c in rows["1r.nonlocal"].strip("|").split("|")]
    assert cells[1:3] == ["holds", "holds"]
    lo, mid, hi = np.exp([x.mean() - half, x.mean(), x.mean() + half])
    assert cells[3] == f"`erank_path_ratio` geometric mean {mid:.3g} [{lo:.3g}, {hi:.3g}] (null ≥ 0.5)"
    d = claims["1r.nonlocal"]["diff"]
    assert cells[4:6] == [pub._p(d["p_t_adj"]), pub._p(d["p_perm"])] and cells[5] == "0.004"  # 1/256: 8 seeds
    assert cells[6] == "replicated (second range: holds)"
    assert "- `st-old` (`survey-table` on the synthetic 128x128 LocalNet task, 3 seeds): made at analysis version 6" in block
    assert "re-made by `segattn compare survey-table --dataset synthetic --analyze`" in block
    assert "Not yet measured" not in block
    # explanation 6: no claim (no run measured meanrow_drop): not yet measured, with the command
    six = pub.explanation_block("6", [current, old], page)
    assert f"Not yet measured at analysis version {pub.VERSION}" in six and pub.MEASURE["6"][0] in six
    assert "without claims of this explanation (their entries or metrics do not allow them): `st-relational`" in six


def test_explanation_block_says_when_its_controls_fail(tmp_path):
    pub = _publisher()
    folder = tmp_path / "docs" / "results" / "bad-box"
    _publish_analysis(folder, _runs(range(8), box3_denoise=0.95))
    block = pub.explanation_block("2", [folder], tmp_path / "docs" / "explanations" / "denoising.md")
    assert "its controls **failed**: 3 x 3 box filter denoises (mean 0.95" in block
    assert pub.explanation_block("3", [folder], tmp_path / "x.md").count("its controls passed (4 of 4") == 1


def test_explanation_block_only_from_the_current_version(tmp_path):
    pub = _publisher()
    folder = tmp_path / "docs" / "results" / "mixed"
    runs = _runs(range(8))
    runs[0]["settings"]["version"] = pub.VERSION - 1  # one run measured before: the whole report is older
    _publish_analysis(folder, runs)
    block = pub.explanation_block("1", [folder], tmp_path / "x.md")
    assert f"Not yet measured at analysis version {pub.VERSION}" in block
    assert f"made at analysis version {pub.VERSION - 1}, {pub.VERSION}" in block


def test_analysis_block_names_the_current_version_and_the_replication(tmp_path, monkeypatch):
    pub = _publisher()
    monkeypatch.setattr(pub, "ROOT", tmp_path)
    monkeypatch.setattr(pub, "RESULTS", tmp_path / "docs" / "results")
    folder = tmp_path / "docs" / "results" / "st-relational"
    _publish_analysis(folder, _runs(range(16)), split=8)
    block = pub.analysis_block(folder)
    assert f"Analysis version {pub.VERSION} (the current one is {pub.VERSION}); collapsed runs: none" in block
    assert "replicated on a second seed range" in block
    row = next(ln for ln in block.splitlines() if ln.startswith("| `nonlocal`'s context path"))
    assert row.endswith("| replicated (second range: holds) |")
    old = tmp_path / "docs" / "results" / "st-old"
    _publish_analysis(old, _runs(range(3), version=pub.VERSION - 1), dataset="synthetic")
    assert f"(the current one is {pub.VERSION}: measurements changed since" in pub.analysis_block(old)


def _findings_line(block, n, plan="survey-table"):
    """Explanation n's line in the findings of ``plan``'s report."""
    section = block.split(f"**`{plan}` on ", 1)[1].split("\n**`", 1)[0]
    return next(ln for ln in section.splitlines() if ln.startswith(f"- [{n}. "))


def test_findings_list_exactly_the_replicated_claims(tmp_path, monkeypatch):
    """README / results.md "what survives a replication": every analysis claim both seed ranges decide
    the same way is listed under its explanation with its verdict, and nothing else; a claim whose
    replication status changes leaves the list."""
    import shutil

    pub = _publisher()
    src = RESULTS / "survey-table-synthetic"
    ana = json.loads((src / "analysis.json").read_text())
    block = pub.findings_block()
    section = block.split("**`survey-table` on ", 1)[1].split("\n**`", 1)[0]
    status = {r["id"]: r for r in ana["replication"]["status"]}
    for c in ana["claims"]:
        kind, entry = c["id"].split(".", 1)
        listed = False
        if c["explanation"] in {ln[3] for ln in section.splitlines() if ln.startswith("- [")}:
            line = _findings_line(block, c["explanation"])
            part = line.split(f"(`{kind}`) ", 1)[1].split(";")[0] if f"(`{kind}`) " in line else ""
            listed = part.startswith(pub.SHORT[c["verdict"]] + " for") and f"`{entry}`" in part
        assert listed == (status[c["id"]]["status"] == "replicated"), c["id"]
    # one replicated claim made "not replicated": it leaves the list
    target = next(c for c in ana["claims"] if status[c["id"]]["status"] == "replicated")
    copy = tmp_path / "docs" / "results" / "survey-table-synthetic"
    shutil.copytree(src, copy)
    for r in ana["replication"]["status"]:
        if r["id"] == target["id"]:
            r["status"], r["second"] = "not replicated", "cannot tell"
    (copy / "analysis.json").write_text(json.dumps(ana))
    monkeypatch.setattr(pub, "RESULTS", tmp_path / "docs" / "results")
    kind, entry = target["id"].split(".", 1)
    line = _findings_line(pub.findings_block(), target["explanation"])
    assert f"`{entry}`" not in line.split(f"(`{kind}`) ", 1)[-1].split(";")[0] or f"(`{kind}`) " not in line


def test_findings_do_not_read_an_explanation_whose_controls_failed(tmp_path, monkeypatch):
    import shutil

    pub = _publisher()
    copy = tmp_path / "docs" / "results" / "survey-table-synthetic"
    shutil.copytree(RESULTS / "survey-table-synthetic", copy)
    ana = json.loads((copy / "analysis.json").read_text())
    assert "not read" not in _findings_line(pub.findings_block(), "3")
    for c in ana["controls"]:
        if c["explanation"] == "3":
            c["ok"] = False
    (copy / "analysis.json").write_text(json.dumps(ana))
    monkeypatch.setattr(pub, "RESULTS", tmp_path / "docs" / "results")
    line = _findings_line(pub.findings_block(), "3")
    assert "not read, its controls failed" in line and "`3w`" not in line


def test_scorecard_states_each_claims_verdict_and_replication_from_the_json():
    """Each README scorecard cell, read back, gives the verdict and the replication status that the
    report's JSON holds for that claim (read here without the publisher's helpers)."""
    pub = _publisher()
    rows = [r for r in pub.scorecard_block().splitlines()[2:] if r.startswith("| ")]
    assert len(rows) == len(pub.SCORECARD)
    for row, (_, name, kind, ids) in zip(rows, pub.SCORECARD):
        agg = json.loads((ROOT / "docs" / "results" / name / f"{kind}.json").read_text())
        verdict = {c["id"]: c["verdict"] for c in agg["claims"]}
        status = {r["id"]: r["status"] for r in agg["replication"]["status"]}
        for cid in ids:
            cell = row.split(f"`{cid}` ", 1)[1].split(";")[0].split(" |")[0]
            if status[cid] == "replicated":
                assert cell == f"**{verdict[cid]}**, replicated", (name, cid, cell)
            elif status[cid] == "undecided in both":
                assert cell == "cannot tell on both ranges", (name, cid, cell)
            else:
                assert cell.startswith(f"{verdict[cid]}, then ") and cell.endswith("(not replicated)"), (name, cid)


def test_scorecard_fails_loudly_when_a_claim_is_gone(monkeypatch):
    pub = _publisher()
    monkeypatch.setattr(pub, "SCORECARD", [("x", "survey-table-synthetic", "compare", ("no-such-claim",))])
    with pytest.raises(KeyError, match="scorecard: survey-table-synthetic/compare.json has no claim"):
        pub.scorecard_block()
