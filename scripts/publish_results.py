"""Re-judge the published reports and write the verdict text of docs/results.md and the README from them.

    python scripts/publish_results.py --rejudge   # compare.* / analysis.* under docs/results/ from the stored
                                                  # per-seed results, with the current rules
    python scripts/publish_results.py --write     # the generated blocks of docs/results.md and README.md
    python scripts/publish_results.py --check     # exit 1 if a generated block differs from the JSON

Every claims table and summary sentence between ``<!-- generated:KEY -->`` and ``<!-- /generated:KEY -->``
comes from ``compare.json`` / ``analysis.json``; ``tests/compare/test_published.py`` fails when the
pages and the JSON disagree, so the wording cannot outrun a verdict.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
PAGES = {"results": ROOT / "docs" / "results.md", "readme": ROOT / "README.md"}
TASKS = {"synthetic": "the synthetic 128x128 LocalNet task", "camvid": "CamVid from scratch (ResNet-18 V1c, 1/3 resolution)"}
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
        cmd = f"segattn compare {meta['plan']} --dataset {meta['dataset']} --seeds {meta['seeds']} --out {rel} --report-only"
        write_report(load_plan(meta["plan"]), folder, meta["dataset"], seeds=meta["seeds"], command=cmd)
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


def analysis_block(folder: Path) -> str:
    agg = _load(folder / "analysis.json")
    rel = folder.relative_to(ROOT / "docs")
    versions = sorted({str((json.loads(p.read_text()).get("settings") or {}).get("version"))
                       for p in folder.glob("runs/*/seed*/analysis.json")})
    coll = [f"`{e['name']}` {len(e['collapsed'])}/{len(e['seeds'])}" for e in agg["entries"] if e.get("collapsed")]
    lines = [summary_sentence(folder.name, agg, "analysis"), "",
             f"Analysis version {', '.join(versions) or '-'} (the current one is 6: measurements changed since; "
             f"re-measuring needs the runs' weights); collapsed runs: {', '.join(coll) or 'none'}; report: "
             f"[`{rel}/analysis.md`]({rel}/analysis.md). Claims that do not say *cannot tell*:", ""]
    decided = [c for c in agg["claims"] if c["verdict"] != "cannot tell"]
    if not decided:
        return "\n".join(lines[:-1] + ["none.", ""])
    lines += ["| claim | verdict (all runs) | without collapsed runs | value or difference [95 % CI] | Holm p | sign-flip p |",
              "|---|---|---|---:|---:|---:|"]
    for c in decided:
        d = c["diff"]
        nc = (c.get("variants") or {}).get("non_collapsed", {}).get("verdict", "-")
        lines.append(f"| {c['text']} | {SHORT[c['verdict']]} | {SHORT.get(nc, nc)} | {_ci(d)} | "
                     f"{_p(d.get('p_t_adj'))} | {_p(d.get('p_perm'))} |")
    return "\n".join(lines) + "\n"


def spread_block() -> str:
    """The same (entry, seed) trained in several published folders: what "deterministic" means here."""
    seen: Dict[str, List[str]] = {}
    for path in sorted(RESULTS.glob("*/runs/fcn/seed0/result.json")):
        r = _load(path)
        tag = f"{100 * r['metrics']['mIoU']:.2f} (`{path.parts[-5]}`, {r['train'].get('threads')} thread(s))"
        seen.setdefault(str(r["config"]["data"].get("dataset")) + " " + json.dumps(r["config"]["data"].get("dataset_kwargs"),
                                                                                   sort_keys=True), []).append(tag)
    lines = ["`fcn` seed 0 (same config, same seed) as stored in each published folder:", ""]
    for key, tags in seen.items():
        lines.append(f"- {key.split(' ', 1)[0]}: " + "; ".join(tags))
    return "\n".join(lines) + "\n"


def readme_block() -> str:
    lines = ["Every published report is re-judged under the rules of [Comparing modules](docs/compare.md) "
             "(Holm-adjusted t-test and exact sign-flip test; at least 6 seeds to hold). The published runs have "
             "3-5 seeds, so no accuracy claim can hold yet (only exact cost claims are decided); the plans ship with "
             "8 seeds and `--replicate`:", ""]
    for folder in compare_reports():
        lines.append("- " + summary_sentence(folder.name, _load(folder / "compare.json"), "compare"))
    for folder in analysis_reports():
        lines.append("- " + summary_sentence(folder.name, _load(folder / "analysis.json"), "analysis"))
    lines += ["", "Tables, per-claim numbers and the command that trains every plan to 8 seeds with a "
              "replication: [Results](docs/results.md)."]
    return "\n".join(lines) + "\n"


def blocks() -> Dict[str, str]:
    out = {f"compare.{f.name}": compare_block(f) for f in compare_reports()}
    out.update({f"analysis.{f.name}": analysis_block(f) for f in analysis_reports()})
    out["spread"] = spread_block()
    out["readme-summary"] = readme_block()
    return out


def sync(text: str, generated: Dict[str, str]) -> str:
    """``text`` with every generated block replaced by its current content (unknown keys are errors)."""
    def repl(m: re.Match[str]) -> str:
        key = m.group("key")
        if key not in generated:
            raise KeyError(f"generated block {key!r} has no report under docs/results/")
        return m.group(1) + generated[key] + m.group(4)

    return BLOCK.sub(repl, text)


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
                print(f"wrote {page.relative_to(ROOT)}")
            else:
                bad.append(str(page.relative_to(ROOT)))
    if args.check and bad:
        print(f"generated blocks out of date in {bad}; run python scripts/publish_results.py --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
