"""Re-judge the published reports and write the verdict text of docs/results.md and the README from them.

    python scripts/publish_results.py --rejudge   # compare.* / analysis.* under docs/results/ from the stored
                                                  # per-seed results, with the current rules
    python scripts/publish_results.py --write     # the generated blocks of docs/results.md, README.md and
                                                  # docs/explanations/*.md
    python scripts/publish_results.py --check     # exit 1 if a generated block differs from the JSON

(run with ``PYTHONPATH=src``). Every claims table and summary sentence between ``<!-- generated:KEY -->``
and ``<!-- /generated:KEY -->`` comes from ``compare.json`` / ``analysis.json``;
``tests/compare/test_published.py`` fails when the pages and the JSON disagree, so the wording cannot
outrun a verdict. Each explanation page (``explanation.<n>``) lists, per published analysis made at the
current analysis version, its task, its controls and the verdicts of that explanation's claims; analyses
of older versions are named with the command that re-makes them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from segattn.analyze.claims import CONTROLS, EXPLANATIONS  # noqa: E402
from segattn.analyze.run import VERSION  # noqa: E402

RESULTS = ROOT / "docs" / "results"
# one page per explanation of segattn.analyze.claims.EXPLANATIONS, in docs/explanations/
EXPLANATION_PAGES = {"1": "low-rank", "2": "denoising", "3": "smoothing", "4": "bases", "5": "em-iterations",
                     "6": "query-independence"}
PAGES = {"results": ROOT / "docs" / "results.md", "readme": ROOT / "README.md",
         "explanations": ROOT / "docs" / "explanations" / "index.md",
         **{f"explanation.{n}": ROOT / "docs" / "explanations" / f"{slug}.md" for n, slug in EXPLANATION_PAGES.items()}}
TASKS = {"synthetic": "the synthetic 128x128 LocalNet task", "camvid": "CamVid from scratch (ResNet-18 V1c, 1/3 resolution)",
         "relational": "the synthetic relational task (a shape takes the colour of the cue bar on its own side)",
         "small-objects": "the synthetic small-objects task (class = own texture x far cue colour; every other "
                          "shape about one backbone cell)",
         "clean-background": "the synthetic clean-background task (the context rule on a smooth background)",
         "patchy": "the synthetic patchy task (the clean-background task shaded per 8x8 cell)"}
# the commands that measure each explanation's claims (8 seeds and a second seed range)
MEASURE = {
    "1": ["segattn compare survey-table --dataset synthetic --seeds 8 --replicate --analyze",
          "segattn compare reasoning-ablation --dataset relational --seeds 8 --replicate --analyze"],
    "2": ["segattn compare survey-table --dataset clean-background --seeds 8 --replicate --analyze",
          "segattn compare task-validation --dataset clean-background --seeds 8 --replicate --analyze"],
    "3": ["segattn compare smoothing --dataset patchy --seeds 8 --replicate --analyze",
          "segattn compare task-validation --dataset patchy --seeds 8 --replicate --analyze "
          "--reuse outputs/compare/smoothing-patchy"],
    "4": ["segattn compare bases --dataset small-objects --seeds 8 --replicate --analyze"],
    "5": ["segattn compare survey-table --dataset synthetic --seeds 8 --replicate --analyze",
          "segattn compare survey-table --dataset relational --seeds 8 --replicate --analyze"],
    "6": ["segattn compare successors --dataset synthetic --seeds 8 --replicate --analyze"],
}
SHORT = {"holds": "holds", "does not hold": "does not hold", "cannot tell": "cannot tell"}
BLOCK = re.compile(r"(<!-- generated:(?P<key>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=key) -->)", re.S)


def _load(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text())


def compare_reports() -> List[Path]:
    return sorted(p.parent for p in RESULTS.glob("*/compare.json"))


def analysis_reports() -> List[Path]:
    return sorted(p.parent for p in RESULTS.glob("*/analysis.json"))


def rejudge() -> None:
    """Rewrite every published compare and analysis report from its stored per-seed results."""
    from segattn.analyze.report import write_report as write_analysis
    from segattn.compare.plan import load_plan
    from segattn.compare.report import write_report

    for folder in compare_reports():
        meta = _load(folder / "plan.json")
        rel = folder.relative_to(ROOT)
        replicate = bool(meta.get("replicate"))
        cmd = (f"segattn compare {meta['plan']} --dataset {meta['dataset']} --seeds {meta['seeds']} --out {rel} --report-only"
               + (" --replicate" if replicate else ""))
        write_report(load_plan(meta["plan"]), folder, meta["dataset"], seeds=meta["seeds"], command=cmd, replicate=replicate)
        print(f"re-judged {rel}/compare.md")
    for folder in analysis_reports():
        agg = _load(folder / "analysis.json")
        write_analysis(agg["per_run"], folder, agg["command"], (agg.get("replication") or {}).get("split"))
        print(f"re-judged {folder.relative_to(ROOT)}/analysis.md")


def _p(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def _ci(t: Dict[str, Any]) -> str:
    lo, hi = t.get("ci_low"), t.get("ci_high")
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "no interval"
    return f"{t['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def counts(claims: List[Dict[str, Any]]) -> str:
    """'N of M claims hold, K do not hold, L cannot tell'."""
    v = [c["verdict"] for c in claims]
    return (f"{v.count('holds')} of {len(v)} claims hold, {v.count('does not hold')} do not hold, "
            f"{v.count('cannot tell')} cannot tell")


def summary_sentence(name: str, agg: Dict[str, Any], kind: str) -> str:
    """The one sentence a page may say about a report."""
    if kind == "compare":
        seeds, task, plan = agg["seeds"], TASKS[agg["dataset"]], agg["plan"]
        what = "accuracy and cost claims"
    else:
        meta = _load(RESULTS / name / "plan.json")
        seeds = max(len(e["seeds"]) for e in agg["entries"])
        task, plan, what = TASKS[meta["dataset"]], meta["plan"], "mechanism claims (`--analyze`)"
        if not is_current(RESULTS / name, agg):
            versions = ", ".join(analysis_versions(RESULTS / name, agg))
            return (f"`{plan}` {what} on {task}, {seeds} seeds (`{name}`): made at analysis version {versions}, "
                    f"whose metrics predate the current claims (version {VERSION}); to be re-made.")
    rep = "replicated on a second seed range" if agg.get("replication") else "not replicated yet"
    return f"`{plan}` {what} on {task}, {seeds} seeds (`{name}`): {counts(agg['claims'])}; {rep}."


def compare_block(folder: Path) -> str:
    agg = _load(folder / "compare.json")
    rel = folder.relative_to(ROOT / "docs")
    lines = [summary_sentence(folder.name, agg, "compare"), "",
             f"Command: `{agg['command']}`; report: [`{rel}/compare.md`]({rel}/compare.md).", "",
             "| entry | seeds | collapsed | mIoU | Δ vs `" + agg["reference"] + "` [95 % CI] |", "|---|---:|---:|---:|---:|"]
    for e in agg["entries"]:
        m, v = e["mIoU"], e.get("vs_reference")
        miou = "-" if m["n"] == 0 else f"{m['mean']:.1f}" + ("" if m["n"] < 2 else f" ± {m['std']:.1f}")
        lines.append(f"| `{e['name']}` | {len(e['seeds'])} | {len(e.get('collapsed', []))} | {miou} | "
                     f"{_ci(v) if v else '(reference)'} |")
    lines += ["", "| claim | verdict (all runs) | without collapsed runs | test | difference [95 % CI] | Holm p | sign-flip p |",
              "|---|---|---|---|---:|---:|---:|"]
    for c in agg["claims"]:
        nc = c["variants"]["non_collapsed"]["verdict"]
        for i, t in enumerate(c["tests"]):
            head = (f"{c['id']}. {c['text']}", SHORT[c["verdict"]], SHORT[nc]) if i == 0 else ("", "", "")
            if "fraction" in t:
                test, diff, hp, pp = f"`{t['a']}` / `{t['b']}` MACs", f"{t['fraction']:.3f} (bound {t['ratio']:g})", "-", "-"
            elif t.get("rule") == "fewer_collapses":
                test = f"`{t['a']}` {t['a_count']}/{t['a_runs']} vs `{t['b']}` {t['b_count']}/{t['b_runs']}"
                diff, hp, pp = "Fisher", _p(t.get("p_t_adj")), "-"
            else:
                test, diff = f"`{t['a']}` − `{t['b']}`", _ci(t)
                hp, pp = _p(t.get("p_t_adj")), _p(t.get("p_perm"))
            lines.append(f"| {head[0]} | {head[1]} | {head[2]} | {test} | {diff} | {hp} | {pp} |")
    return "\n".join(lines) + "\n"


def analysis_versions(folder: Path, agg: Optional[Dict[str, Any]] = None) -> List[str]:
    """The analysis versions the report's runs were measured at (from the runs' stored settings)."""
    agg = agg if agg is not None else _load(folder / "analysis.json")
    found = {str((r.get("settings") or {}).get("version")) for r in agg.get("per_run", []) if r.get("settings")}
    if not found:
        found = {str((json.loads(p.read_text()).get("settings") or {}).get("version"))
                 for p in folder.glob("runs/*/seed*/analysis.json")}
    return sorted(found, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))  # 9 before 10


def is_current(folder: Path, agg: Optional[Dict[str, Any]] = None) -> bool:
    """Every run of the report was measured at the current analysis version."""
    return analysis_versions(folder, agg) == [str(VERSION)]


def _replication(agg: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {r["id"]: r for r in (agg.get("replication") or {}).get("status", [])}


def _rep_cell(r: Optional[Dict[str, Any]]) -> str:
    if r is None:
        return "not replicated yet"
    return f"{r['status']} (second range: {SHORT.get(r.get('second') or '', 'not measured')})"


def analysis_block(folder: Path) -> str:
    agg = _load(folder / "analysis.json")
    rel = folder.relative_to(ROOT / "docs")
    versions = analysis_versions(folder, agg)
    coll = [f"`{e['name']}` {len(e['collapsed'])}/{len(e['seeds'])}" for e in agg["entries"] if e.get("collapsed")]
    state = "" if versions == [str(VERSION)] else ": measurements changed since; re-measuring needs the runs' weights"
    lines = [summary_sentence(folder.name, agg, "analysis"), "",
             f"Analysis version {', '.join(versions) or '-'} (the current one is {VERSION}{state}); collapsed runs: "
             f"{', '.join(coll) or 'none'}; report: [`{rel}/analysis.md`]({rel}/analysis.md). Claims that do not say "
             "*cannot tell*:", ""]
    decided = [c for c in agg["claims"] if c["verdict"] != "cannot tell"]
    if not decided:
        return "\n".join(lines[:-1] + ["none.", ""])
    rep = _replication(agg) if agg.get("replication") else None
    lines += ["| claim | verdict (all runs) | without collapsed runs | value or difference [95 % CI] | Holm p | sign-flip p |"
              + (" replication |" if rep is not None else ""),
              "|---|---|---|---:|---:|---:|" + ("---|" if rep is not None else "")]
    for c in decided:
        d = c["diff"]
        nc = (c.get("variants") or {}).get("non_collapsed", {}).get("verdict", "-")
        lines.append(f"| {c['text']} | {SHORT[c['verdict']]} | {SHORT.get(nc, nc)} | {claim_value(c)} | "
                     f"{_p(d.get('p_t_adj'))} | {_p(d.get('p_perm'))} |" + (f" {_rep_cell(rep.get(c['id']))} |"
                                                                           if rep is not None else ""))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- explanation pages
def _g(v: float) -> str:
    return f"{v:.3g}"


def claim_value(c: Dict[str, Any]) -> str:
    """A claim's measured value (one-sample claims: the metric's mean and 95 % interval, and the null) or
    its paired difference (oriented so that positive favours the claim) with its 95 % interval."""
    d = c["diff"]
    lo, hi, mean = d.get("ci_low"), d.get("ci_high"), d.get("mean")
    if not d.get("n") or mean is None or math.isnan(mean):
        return "no seed with both values"
    no_ci = lo is None or hi is None or math.isnan(lo) or math.isnan(hi)
    if c["kind"] in ("below", "above"):
        thr = c["threshold"]
        # the test's values are threshold - value (below) or value - threshold (above); for a ratio
        # (scale "log") log threshold - log value or its negative, shown as the geometric mean
        if c.get("scale") == "log":
            back = (lambda t: thr / math.exp(t)) if c["kind"] == "below" else (lambda t: thr * math.exp(t))
        else:
            back = (lambda t: thr - t) if c["kind"] == "below" else (lambda t: thr + t)
        value, ci = back(mean), None if no_ci else tuple(sorted((back(lo), back(hi))))
        null = f"null ≥ {thr:g}" if c["kind"] == "below" else f"null ≤ {thr:g}"
        geo = "geometric mean " if c.get("scale") == "log" else ""
        interval = "no interval" if ci is None else f"[{_g(ci[0])}, {_g(ci[1])}]"
        return f"`{c['metric']}` {geo}{_g(value)} {interval} ({null})"
    interval = "no interval" if no_ci else f"[{lo:+.3g}, {hi:+.3g}]"
    return f"Δ `{c['metric']}` {mean:+.3g} {interval}"


def explanation_controls(n: str) -> List[Any]:
    """The rows of :data:`segattn.analyze.claims.CONTROLS` that belong to explanation ``n``."""
    return [row[1:] for row in CONTROLS if row[0] == n]


def _controls_state(n: str, agg: Dict[str, Any]) -> str:
    names = {row[0] for row in explanation_controls(n)}
    if not names:
        return "no control of `segattn.analyze.claims.controls()` belongs to this explanation"
    rows = [c for c in agg.get("controls", []) if c["name"] in names and c.get("runs")]
    if not rows:
        return "its controls were not measured in this report"
    failed = [c for c in rows if not c.get("ok")]
    if not failed:
        return f"its controls passed ({len(rows)} of {len(names)} measured, every run inside its range)"
    return "its controls **failed**: " + "; ".join(
        f"{c['name']} (mean {_g(c['mean'])}, runs {_g(c['min'])} .. {_g(c['max'])}, expected [{c['expected'][0]:g}, "
        f"{c['expected'][1]:g}])" for c in failed) + "; its claims are not to be read"


def _report_link(folder: Path, page: Path) -> str:
    rel = Path(os.path.relpath(folder / "analysis.md", page.parent)).as_posix()
    return f"[`{folder.name}/analysis.md`]({rel})"


def _analysis_section(n: str, folder: Path, agg: Dict[str, Any], claims: List[Dict[str, Any]], page: Path) -> List[str]:
    meta = _load(folder / "plan.json")
    seeds = max((len(e["seeds"]) for e in agg["entries"]), default=0)
    rep_info = agg.get("replication")
    rep_text = (f"replication on the seeds from {rep_info['split']} on ({rep_info['runs']} run(s))" if rep_info
                else "not replicated yet")
    coll = [f"`{e['name']}` {len(e['collapsed'])}/{len(e['seeds'])}" for e in agg["entries"] if e.get("collapsed")]
    lines = [f"**`{meta['plan']}` on {TASKS[meta['dataset']]}**, {seeds} seeds, {rep_text}; {_controls_state(n, agg)}; "
             f"collapsed runs: {', '.join(coll) or 'none'}. Command: `{agg['command']}`; report: "
             f"{_report_link(folder, page)}.", "",
             "| claim | verdict (all runs) | without collapsed runs | value or difference [95 % CI] | Holm p | sign-flip p "
             "| replication |", "|---|---|---|---|---:|---:|---|"]
    rep = _replication(agg)
    for c in claims:
        d = c["diff"]
        nc = (c.get("variants") or {}).get("non_collapsed", {}).get("verdict", "-")
        lines.append(f"| {c['id']}: {c['text']} | {SHORT[c['verdict']]} | {SHORT.get(nc, nc)} | {claim_value(c)} | "
                     f"{_p(d.get('p_t_adj'))} | {_p(d.get('p_perm'))} | "
                     f"{_rep_cell(rep.get(c['id'])) if rep_info else 'not replicated yet'} |")
    return lines + [""]


def explanation_block(n: str, folders: Optional[Sequence[Path]] = None, page: Optional[Path] = None) -> str:
    """The generated part of explanation ``n``'s page: its controls, and per published analysis the
    verdicts of its claims (analyses made at an older analysis version: named, with the command that
    re-makes them)."""
    folders = analysis_reports() if folders is None else list(folders)
    page = page or ROOT / "docs" / "explanations" / f"{EXPLANATION_PAGES[n]}.md"  # links as from the real page
    ctl = explanation_controls(n)
    lines = ["Controls of this explanation (`segattn.analyze.claims.CONTROLS`; each report checks that every run "
             "lies in the expected range before its claims are read):", ""]
    where = {"all": "every run", "identity": "the no-context entry", "context": "every run of a context entry"}
    lines += [f"- {name}: `{metric}` in [{lo:g}, {hi:g}] on {where[which]} "
              f"({shows})" for name, metric, which, lo, hi, shows in ctl] or [
        "- none in `segattn.analyze.claims.controls()`: this explanation's known answers are the tests of its "
        "metrics (`tests/analyze/`)"]
    lines.append("")
    current, older, without = [], [], []
    for folder in folders:
        agg = _load(folder / "analysis.json")
        if not is_current(folder, agg):
            older.append((folder, agg))
            continue
        claims = [c for c in agg["claims"] if str(c.get("explanation")) == n]
        (current if claims else without).append((folder, agg, claims))
    if current:
        lines += [f"Verdicts at analysis version {VERSION} (one Holm family per report; *holds* needs the adjusted "
                  "t-test and the sign-flip test; see [Comparing modules](../compare.md)):", ""]
        for folder, agg, claims in current:
            lines += _analysis_section(n, folder, agg, claims, page)
    else:
        lines += [f"Not yet measured at analysis version {VERSION}. Measured by:", "", "```text", *MEASURE[n], "```", ""]
    if without:
        lines += [f"Analyses at version {VERSION} without claims of this explanation (their entries or metrics do not "
                  "allow them): " + ", ".join(f"`{f.name}`" for f, _, _ in without) + ".", ""]
    if older:
        lines += ["Published analyses made before these claims:", ""]
        for folder, agg in older:
            meta = _load(folder / "plan.json")
            seeds = max((len(e["seeds"]) for e in agg["entries"]), default=0)
            lines.append(f"- `{folder.name}` (`{meta['plan']}` on {TASKS[meta['dataset']]}, {seeds} seeds): made at analysis version "
                         f"{', '.join(analysis_versions(folder, agg)) or '-'}: their metrics predate these claims; "
                         f"re-made by `{agg['command']}`")
        lines.append("")
    return "\n".join(lines)


def spread_block() -> str:
    """The same (entry, seed) trained in several published folders: what "deterministic" means here."""
    seen: Dict[str, List[str]] = {}
    names: Dict[str, str] = {}
    for path in sorted(RESULTS.glob("*/runs/fcn/seed0/result.json")):
        r = _load(path)
        tag = f"{100 * r['metrics']['mIoU']:.2f} (`{path.parts[-5]}`, {r['train'].get('threads')} thread(s))"
        data = r["config"]["data"]
        key = str(data.get("dataset")) + " " + json.dumps(data.get("dataset_kwargs"), sort_keys=True)
        task = (data.get("dataset_kwargs") or {}).get("task")
        names[key] = str(data.get("dataset")) + (f", task {task}" if task and task != "context" else "")
        seen.setdefault(key, []).append(tag)
    lines = ["`fcn` seed 0 (same config, same seed) as stored in each published folder:", ""]
    for key, tags in seen.items():
        lines.append(f"- {names[key]}: " + "; ".join(tags))
    return "\n".join(lines) + "\n"


def readme_block() -> str:
    """The README's short status: which reports are at 8 seeds with a replication, and how many are not."""
    seeds_of = {f.name: _load(f / "compare.json")["seeds"] for f in compare_reports()}
    full = [n for n, k in seeds_of.items() if k >= 6]
    rest = [n for n in seeds_of if n not in full]
    older = [f.name for f in analysis_reports() if not is_current(f)]
    seeds = sorted({seeds_of[n] for n in rest})
    counts = f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else "".join(map(str, seeds))
    rest_text = (f" The other {_count(len(rest), 'report')} {'has' if len(rest) == 1 else 'have'} {counts} seeds, so "
                 f"none of {'its' if len(rest) == 1 else 'their'} accuracy claims can hold, and "
                 f"{_count(len(older), 'analysis', 'analyses')} {'predates' if len(older) == 1 else 'predate'} the current "
                 f"analysis (version {VERSION}): each one, and the commands that retrain them, in [Results](docs/results.md)."
                 if rest else "")
    return ("Every published report is judged under the rules of [Comparing modules](docs/compare.md) (Holm-adjusted "
            "t-test and exact sign-flip test; at least 6 seeds to hold; the plans ship with 8 seeds and `--replicate`). "
            "At 8 seeds with a replication: " + (", ".join(f"`{n}`" for n in full) or "none") + "." + rest_text + "\n")


def _count(n: int, one: str, many: str = "") -> str:
    """``1 report``, ``2 reports``."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


# The README's scorecard: each statement of the survey, the published report that tests it most directly
# (a validated task where the mechanism matters; a second task where the verdicts differ) and the claims
# read there; a claim or report that disappears makes the block fail to generate, so the list cannot go
# stale silently.
SCORECARD = [
    ("Non-local, A2-Net and EMA (T = 1) are equally accurate", "survey-table-synthetic", "compare", ("1a",)),
    ("More EM iterations are clearly better", "survey-table-synthetic", "compare", ("1b", "1c")),
    ("The pairwise function matters little", "pairwise-functions-synthetic", "compare", ("3a", "3b")),
    ("The reasoning step of the low-rank modules adds nothing", "reasoning-ablation-synthetic", "compare",
     ("2a", "2b", "2c", "2d")),
    ("1. Low-rank reconstruction makes the classes easier to separate", "bases-synthetic", "analysis",
     ("1r.ema-T1", "1f.ema-T1", "1f.ppm")),
    ("1. (the same, where the class needs the shape's own pixels)", "bases-small-objects", "analysis",
     ("1r.ema-T1", "1f.ema-T1", "1f.ppm")),
    ("2. Non-local is non-local means, hence robust", "task-validation-clean-background", "analysis",
     ("2d.nonlocal", "2n.nonlocal", "2p.nonlocal")),
    ("3. Local Relation is an edge-preserving smoother", "smoothing-clean-background", "analysis",
     ("3w.local-relation", "3b.local-relation")),
    ("4. EM bases keep the small objects that pooled bases lose", "bases-small-objects", "analysis",
     ("4s.ppm", "4s.ppm-K16", "4r.ppm-K16")),
    ("5. More EM iterations bring the shape pixels more of the cue", "survey-table-synthetic", "analysis",
     ("5f.ema-T3", "5w.ema-T3")),
    ("6. Non-local's attention is query-independent", "smoothing-clean-background", "analysis", ("6q.nonlocal",)),
]


def _scorecard_state(cid: str, verdict: str, rep: Optional[Dict[str, Any]]) -> str:
    """``1a`` **holds**, replicated / cannot tell on both ranges / does not hold, then cannot tell."""
    if rep is None:
        return f"`{cid}` {SHORT[verdict]} (not replicated yet)"
    second = SHORT.get(rep.get("second") or "", "not measured")
    if rep["status"] == "replicated":
        return f"`{cid}` **{SHORT[verdict]}**, replicated"
    if rep["status"] == "undecided in both":
        return f"`{cid}` cannot tell on both ranges"
    return f"`{cid}` {SHORT[verdict]}, then {second} (not replicated)"


def scorecard_block(prefix: str = "docs/") -> str:
    """The README's table: per statement of the survey (:data:`SCORECARD`), its task and report and the
    verdicts of the claims that test it, on seeds 0..7 and on the replication."""
    lines = ["| the survey says | task (report) | claims: verdict on seeds 0..7 and on 8..15 |", "|---|---|---|"]
    for text, name, kind, ids in SCORECARD:
        agg = _load(RESULTS / name / f"{kind}.json")
        meta = _load(RESULTS / name / "compare.json")
        found = {c["id"]: c for c in agg["claims"]}
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"scorecard: {name}/{kind}.json has no claim {missing}")
        rep = _replication(agg)
        page = f"{prefix}results/{name}/{kind}.md"
        lines.append(f"| {text} | {meta['dataset']} ([`{name}`]({page})) | "
                     + "; ".join(_scorecard_state(i, found[i]["verdict"], rep.get(i)) for i in ids) + " |")
    return "\n".join(lines) + "\n"


# what each analysis claim kind states, for the findings lists ("<kind text> for <entries>")
KIND_TEXT = {
    "1r": "the context path has an effective rank below half its input's",
    "1f": "the classes separate better on the context path than on the input (Fisher gain > 1.1)",
    "2d": "the module passes < 90 % of the noise per unit of centred signal",
    "2a": "the context path alone passes < 90 % of the noise per unit of centred signal",
    "2n": "loses less mIoU under input noise than its matched control (the FCN, or else GCNet)",
    "2p": "loses less mIoU under PGD than its matched control (the FCN, or else GCNet)",
    "3w": "smooths inside classes (within-class roughness lowered by >= 10 %)",
    "3b": "keeps the contrast across label edges (> 0.9 of the input's)",
    "4c": "EMA T = 1's bases are less similar to each other than the bases of",
    "4k": "EMA T = 1's bases span more directions (Gram erank / K) than the bases of",
    "4r": "EMA T = 1's bases reconstruct small segments better than the bases of",
    "4s": "EMA T = 1 is more accurate on small segments than",
    "5f": "carries more of the cue into the shape logits than EMA T = 1 (counterfactual)",
    "5w": "its own T carries more of the cue than T = 1 on the same model (counterfactual, > 1.1 x)",
    "5s": "is more accurate evaluated with T = 1 than with its own T (> 1 point)",
    "5i": "the EM iterations after the first make the classes less separable across images",
    "5g": "the EM gradient cut loses more of the gradient than at T = 1",
    "6q": "works as if query-independent (mean attention row costs < 1 mIoU point)",
}


def _claim_kind(cid: str) -> str:
    """``1r.nonlocal`` -> ``1r``; a plan's own claim ids (``0``, ``1b``) stay as they are."""
    return cid.split(".", 1)[0]


def _replicated_mechanisms(folder: Path) -> Dict[str, Any]:
    """Per explanation of a current analysis with a replication: ``{(kind, verdict): [entries]}`` of the
    claims both seed ranges decide the same way, or the names of its failed controls (then not read)."""
    out: Dict[str, Any] = {}
    if not (folder / "analysis.json").is_file() or not is_current(folder):
        return out
    ana = _load(folder / "analysis.json")
    arep = _replication(ana)
    for n in EXPLANATIONS:
        groups: Dict[Tuple[str, str], List[str]] = {}
        for c in ana["claims"]:
            r = arep.get(c["id"])
            if c["explanation"] == n and r and r["status"] == "replicated":
                groups.setdefault((_claim_kind(c["id"]), c["verdict"]), []).append(c["id"].split(".", 1)[-1])
        failed = [c["name"] for c in ana.get("controls", []) if c.get("explanation") == n and c.get("ok") is False]
        if groups:
            out[n] = {"failed": failed} if failed else groups
    return out


def _explanation_link(n: str) -> str:
    return f"[{n}. {EXPLANATIONS[n]}](explanations/{EXPLANATION_PAGES[n]}.md)"


def findings_block() -> str:
    """docs/results.md's replicated findings: per report with a second seed range, its plan's claims with
    their replication and the mechanism claims both seed ranges decide the same way (*holds* or *does
    not hold*), grouped by claim kind. (The README has the shorter :func:`scorecard_block`.)"""
    lines: List[str] = []
    for folder in compare_reports():
        agg = _load(folder / "compare.json")
        rep = {r["id"]: r for r in (agg.get("replication") or {}).get("status", [])}
        if not rep:
            continue
        lines += [f"**`{agg['plan']}` on {TASKS[agg['dataset']]}** ({agg['seeds']} seeds, replicated on a second "
                  f"range of {agg['seeds']}; [report](results/{folder.name}/compare.md)):", ""]
        for c in agg["claims"]:
            r = rep.get(c["id"], {})
            if r.get("status") == "replicated":
                state = f"replicated: **{SHORT[c['verdict']]}**"
            else:
                state = (f"{r.get('status', 'not replicated yet')} (seeds 0..{agg['seeds'] - 1}: {SHORT[c['verdict']]}; "
                         f"second range: {SHORT.get(r.get('second') or '', 'not measured')})")
            lines.append(f"- {c['id']}. {c['text']}: {state}.")
        lines.append("")
        for n, found in _replicated_mechanisms(folder).items():
            if "failed" in found:
                lines.append(f"- {_explanation_link(n)}: not read, its controls failed in this report "
                             f"({'; '.join(found['failed'])}).")
                continue
            parts = [f"*{KIND_TEXT.get(k, k)}* (`{k}`) {SHORT[v]} for {', '.join(f'`{e}`' for e in entries)}"
                     for (k, v), entries in sorted(found.items())]
            lines.append(f"- {_explanation_link(n)}: " + "; ".join(parts) + ".")
        lines += ["", "Every other claim of these reports is *cannot tell* in at least one seed range, or decided "
                  "differently in the two; the claim texts and numbers are on the linked pages.", ""]
    return "\n".join(lines).rstrip("\n") + "\n" if lines else "No plan has been published with a replication yet.\n"


def validation_block() -> str:
    """The explanations' index: each published ``task-validation`` report, its claims' verdicts and their
    replication; a task without one is "not yet run at 8 seeds"."""
    lines: List[str] = []
    done = set()
    for folder in compare_reports():
        agg = _load(folder / "compare.json")
        if agg["plan"] != "task-validation":
            continue
        done.add(agg["dataset"])
        rep = {r["id"]: r for r in (agg.get("replication") or {}).get("status", [])}
        lines += [f"**{TASKS[agg['dataset']]}** (`{folder.name}`, {agg['seeds']} seeds, "
                  + ("replicated on a second seed range" if rep else "not replicated yet")
                  + f"; [report](../results/{folder.name}/compare.md)):", ""]
        for c in agg["claims"]:
            r = rep.get(c["id"])
            tail = f"; replication: {r['status']} (second range: {SHORT.get(r.get('second') or '', '-')})" if r else ""
            lines.append(f"- {c['id']}. {c['text']}: {SHORT[c['verdict']]}{tail}.")
        lines.append("")
    missing = [t for t in ("relational", "small-objects", "clean-background", "patchy") if t not in done]
    if missing:
        lines.append("Not yet run at 8 seeds: " + ", ".join(f"`{t}`" for t in missing) + " (`segattn compare "
                     "task-validation --dataset TASK --replicate -j 2`); until then no claim on those tasks is read.")
    return "\n".join(lines) + "\n"


def blocks() -> Dict[str, str]:
    out = {f"compare.{f.name}": compare_block(f) for f in compare_reports()}
    out.update({f"analysis.{f.name}": analysis_block(f) for f in analysis_reports()})
    out.update({f"explanation.{n}": explanation_block(n) for n in EXPLANATIONS})
    out["spread"] = spread_block()
    out["readme-summary"] = readme_block()
    out["readme-scorecard"] = scorecard_block("docs/")
    out["findings"] = findings_block()
    out["validation"] = validation_block()
    return out


def sync(text: str, generated: Dict[str, str]) -> str:
    """``text`` with every generated block replaced by its current content (unknown keys are errors)."""
    def repl(m: re.Match[str]) -> str:
        key = m.group("key")
        if key not in generated:
            raise KeyError(f"generated block {key!r} has no report under docs/results/")
        return m.group(1) + generated[key] + m.group(4)

    return BLOCK.sub(repl, text)


def _shown(page: Path) -> str:
    try:
        return str(page.relative_to(ROOT))
    except ValueError:  # a page outside the checkout (the tests' copies)
        return str(page)


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rejudge", action="store_true")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    if args.rejudge:
        rejudge()
    generated = blocks()
    bad = []
    for page in PAGES.values():
        text = page.read_text()
        new = sync(text, generated)
        if new != text:
            if args.write:
                page.write_text(new)
                print(f"wrote {_shown(page)}")
            else:
                bad.append(_shown(page))
    if args.check and bad:
        print(f"generated blocks out of date in {bad}; run python scripts/publish_results.py --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
