"""The comparison report: statistics over seeds, paired differences, claims, tables and a plot.

``aggregate`` turns the finished runs (``runs/<entry>/seed<k>/result.json``) into numbers;
``write_report`` writes ``compare.md`` (tables and the claim-by-claim verdicts), ``compare.json``
(everything, machine-readable), ``compare.csv`` (one row per entry), ``runs.csv`` (one row per run)
and ``compare.png`` (mIoU against MACs with error bars; needs matplotlib, the ``viz`` extra).
All accuracy figures are mIoU in percentage points. Verdicts are computed here, from the numbers
(:mod:`segattn.compare.claims`, tests from :mod:`segattn.stats`), never written by hand.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from segattn.compare.claims import VERDICT_TEXT, claims_markdown, collapsed_runs, judge_claims, replication
from segattn.compare.plan import Plan
from segattn.io import atomic_write_json, atomic_write_text
from segattn.stats import ALPHA, bootstrap_diff, paired, summarize

RESULT = "result.json"


def collect(out: Union[str, Path]) -> List[Dict[str, Any]]:
    """Every finished run's result under ``out/runs`` (sorted by entry, seed)."""
    results = []
    for path in sorted(Path(out).glob(f"runs/*/seed*/{RESULT}")):
        results.append(json.loads(path.read_text()))
    return results


def _counts(result: Dict[str, Any]) -> Dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.int64) for k, v in result["per_image"].items()}


def _nanfloat(v: Any) -> float:
    return math.nan if v is None else float(v)


def _median(values: Sequence[Any]) -> float:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return statistics.median(vals) if vals else math.nan


def compare_pair(a: Dict[int, Dict[str, Any]], b: Dict[int, Dict[str, Any]], resamples: int = 2000) -> Dict[str, Any]:
    """Paired difference a - b (mIoU points) over the seeds both have, plus the image bootstrap."""
    seeds = sorted(set(a) & set(b))
    da = [100 * _nanfloat(a[s]["metrics"]["mIoU"]) for s in seeds]
    db = [100 * _nanfloat(b[s]["metrics"]["mIoU"]) for s in seeds]
    out: Dict[str, Any] = {"seeds": seeds, **paired(da, db)}
    same_images = all(_counts(a[s])["tp"].shape == _counts(b[s])["tp"].shape for s in seeds)
    if seeds and same_images:
        out["bootstrap"] = bootstrap_diff([_counts(a[s]) for s in seeds], [_counts(b[s]) for s in seeds], resamples)
    else:
        out["bootstrap"] = {"low": math.nan, "high": math.nan, "resamples": 0}
    return out


def aggregate(plan: Plan, results: List[Dict[str, Any]], dataset: str, seeds: Optional[int] = None,
              resamples: int = 2000, seed_start: int = 0) -> Dict[str, Any]:
    """Numbers of the report: per entry, against the reference, and per claim, over the seeds
    ``seed_start .. seed_start + seeds - 1``."""
    n_seeds = seeds or plan.seeds
    by_entry: Dict[str, Dict[int, Dict[str, Any]]] = {e.name: {} for e in plan.entries}
    for r in results:
        if r.get("entry") in by_entry and seed_start <= int(r["seed"]) < seed_start + n_seeds:
            by_entry[r["entry"]][int(r["seed"])] = r
    collapsed = collapsed_runs(by_entry, plan.reference)
    classes: List[str] = next((r["classes"] for r in results), [])
    entries = []
    for e in plan.entries:
        runs = by_entry[e.name]
        seeds_done = sorted(runs)
        miou = [100 * _nanfloat(runs[s]["metrics"]["mIoU"]) for s in seeds_done]
        row: Dict[str, Any] = {
            "name": e.name, "describe": e.describe(), "note": e.note, "seeds": seeds_done,
            "complete": len(seeds_done) == n_seeds, "mIoU": summarize(miou), "mIoU_per_seed": miou,
            "aAcc": summarize([100 * _nanfloat(runs[s]["metrics"]["aAcc"]) for s in seeds_done]),
            "mAcc": summarize([100 * _nanfloat(runs[s]["metrics"]["mAcc"]) for s in seeds_done]),
            "IoU": {c: summarize([100 * _nanfloat(runs[s]["metrics"]["IoU"].get(c)) for s in seeds_done]) for c in classes},
            "collapsed": collapsed.get(e.name, []),
            "mIoU_non_collapsed": summarize([v for s, v in zip(seeds_done, miou) if s not in collapsed.get(e.name, [])]),
        }
        if seeds_done:
            costs = [runs[s]["cost"] for s in seeds_done]
            row["cost"] = {
                "params": costs[0]["params"], "macs": costs[0]["macs"], "context_macs": costs[0]["context_macs"],
                "eval_size": costs[0].get("eval_size"),
                "latency_ms": _median([c["latency_ms"] for c in costs]),
                "train_step_mem_mb": _median([c["train_step_mem_mb"] for c in costs]),
            }
            row["train_wall_s"] = statistics.mean(float(runs[s]["train"]["wall_s"]) for s in seeds_done)
            row["iterations"] = runs[seeds_done[0]]["train"]["iterations"]
        entries.append(row)
    ref = plan.reference
    for row in entries:
        if row["name"] != ref:
            row["vs_reference"] = compare_pair(by_entry[row["name"]], by_entry[ref], resamples)
    claims = judge_claims(plan.claims_for(dataset), by_entry, plan.margin, ref, getattr(plan, "verdict_runs", "all"))
    in_range = [r for rows in by_entry.values() for r in rows.values()]
    commits = sorted({str(r.get("provenance", {}).get("commit")) for r in results
                      if seed_start <= int(r.get("seed", 0)) < seed_start + n_seeds})
    aliases = {e.name for e in plan.entries if e.same_as}  # their runs are copies of their twins' (same_as)
    copies = [r for r in in_range if isinstance(r.get("reused_from"), dict)]
    copied = [r["reused_from"] for r in copies if r.get("entry") not in aliases]
    reused = {"runs": len(copied), "from": sorted({str(Path(str(c.get("run"))).parent.parent.parent) for c in copied}),
              "same_network": sum(r.get("entry") in aliases for r in copies)}
    return {"plan": plan.name, "description": plan.description, "dataset": dataset, "seeds": n_seeds,
            "seed_start": seed_start, "reference": ref, "margin": plan.margin, "alpha": ALPHA, "classes": classes, "entries": entries, "claims": claims,
            "runs_done": sum(len(v) for v in by_entry.values()), "runs_total": n_seeds * len(plan.entries),
            "commits": commits, "reused": reused, "protocol": _protocol_summary(results),
            "claims_elsewhere": [{"id": c.id, "text": c.text, "protocols": c.protocols}
                                 for c in plan.claims if c not in plan.claims_for(dataset)]}


def _protocol_summary(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    if not results:
        return {}
    cfg = results[0].get("config", {})
    d, s, o, m = cfg.get("data", {}), cfg.get("schedule", {}), cfg.get("optim", {}), cfg.get("model", {})
    return {"dataset": d.get("dataset"), "dataset_kwargs": d.get("dataset_kwargs"), "crop_size": d.get("crop_size"),
            "batch_size": d.get("batch_size"), "iters": s.get("iters"), "optim": o.get("name"), "lr": o.get("lr"),
            "backbone": m.get("backbone"), "output_stride": m.get("output_stride"),
            "channels": (m.get("kwargs") or {}).get("channels"), "eval": cfg.get("eval"),
            "threads": results[0].get("train", {}).get("threads"), "device": results[0].get("train", {}).get("device")}


# ------------------------------------------------------------------------------------ formatting
def _pm(s: Dict[str, float], digits: int = 1) -> str:
    if s["n"] == 0:
        return "-"
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _ci(lo: float, hi: float, signed: bool = False) -> str:
    if math.isnan(lo) or math.isnan(hi):
        return "-"
    f = "{:+.1f}" if signed else "{:.1f}"
    return f"[{f.format(lo)}, {f.format(hi)}]"


def _num(v: Any, scale: float = 1.0, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{float(v) / scale:.{digits}f}"


def _p(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def describe_diff(a: str, b: str, diff: Dict[str, Any]) -> str:
    """One sentence with the paired difference, its intervals and p-value."""
    n = diff["n"]
    if n == 0:
        return f"`{a}` − `{b}`: no seed finished for both"
    boot = diff.get("bootstrap", {})
    text = f"`{a}` − `{b}` = {diff['mean']:+.2f} points over {n} seed{'s' if n != 1 else ''}"
    if n >= 2:
        text += (f" (95 % t-interval {_ci(diff['ci_low'], diff['ci_high'], True)}, paired t-test p = {_p(diff['p'])}; "
                 f"bootstrap over validation images {_ci(boot.get('low', math.nan), boot.get('high', math.nan), True)})")
    else:
        text += " (one seed: no interval)"
    return text


def markdown(agg: Dict[str, Any], command: str) -> str:
    ref = agg["reference"]
    p = agg.get("protocol", {})
    lines = [f"# `segattn compare {agg['plan']}` on {agg['dataset']}", ""]
    if agg["description"]:
        lines += [agg["description"], ""]
    lines += ["```bash", command, "```", ""]
    first, last = agg.get("seed_start", 0), agg.get("seed_start", 0) + agg["seeds"] - 1
    lines.append(f"Runs finished: {agg['runs_done']} of {agg['runs_total']} ({len(agg['entries'])} entries x "
                 f"{agg['seeds']} seeds, {first}..{last}). Source commit(s): {', '.join(f'`{c}`' for c in agg['commits']) or '-'}.")
    reused = agg.get("reused") or {}
    if reused.get("runs"):
        lines.append(f"Reused: {reused['runs']} of these runs were trained for another plan with the identical config "
                     f"and copied from {', '.join(f'`{d}`' for d in reused['from'])} (`reused_from` in their result.json).")
    if reused.get("same_network"):
        n = reused["same_network"]
        lines.append(f"Same network: {n} run{'s' if n != 1 else ''} of the entries marked `(same network as ...)` "
                     f"{'were' if n != 1 else 'was'} copied from the twin's run at the same seed, not trained "
                     "(`same_as` in the plan).")
    if p:
        lines.append(f"Protocol: {p.get('dataset')} {p.get('dataset_kwargs') or ''}, crop {p.get('crop_size')}, "
                     f"batch {p.get('batch_size')}, {p.get('iters')} iterations, {p.get('optim')} lr {p.get('lr')}, "
                     f"backbone {p.get('backbone')} (output stride {p.get('output_stride')}), head width "
                     f"{p.get('channels')}, {p.get('threads')} thread(s) on {p.get('device')}.")
    lines += ["", "mIoU in points: mean ± standard deviation over seeds, and the 95 % t-interval of the mean. "
              f"Δ = paired difference against `{ref}` (same seeds), with its 95 % t-interval over seeds, the "
              "paired t-test p-value, and a 95 % bootstrap interval over validation images. Params and MACs "
              "(multiply-accumulates of one forward at the eval size; 'context' = the context modules' own "
              "`flops()`) are exact; latency (batch 1, median of 5) and train-step memory (one forward + "
              "backward at the training batch, resident-set growth on CPU) were measured inside each run, "
              "on a machine that may have been shared, median over seeds.", ""]
    head = ["entry", "setting", "seeds", "collapsed", "mIoU", "95 % CI", f"Δ vs {ref}", "Δ 95 % CI", "p", "Δ bootstrap CI",
            "params (M)", "GMACs", "context MMACs", "latency (ms)", "train-step mem (MiB)", "train time (s)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for e in agg["entries"]:
        s, c = e["mIoU"], e.get("cost", {})
        v = e.get("vs_reference")
        boot = v["bootstrap"] if v else {}
        cells = [f"`{e['name']}`", e["describe"], str(len(e["seeds"])), str(len(e.get("collapsed", []))), _pm(s),
                 _ci(s["ci_low"], s["ci_high"]),
                 f"{v['mean']:+.1f}" if v and v["n"] else ("(reference)" if e["name"] == ref else "-"),
                 _ci(v["ci_low"], v["ci_high"], True) if v else "-", _p(v.get("p")) if v else "-",
                 _ci(boot.get("low", math.nan), boot.get("high", math.nan), True) if v else "-",
                 _num(c.get("params"), 1e6), _num(c.get("macs"), 1e9, 3), _num(c.get("context_macs"), 1e6, 2),
                 _num(c.get("latency_ms"), 1, 1), _num(c.get("train_step_mem_mb"), 1, 0),
                 _num(e.get("train_wall_s"), 1, 0)]
        lines.append("| " + " | ".join(cells) + " |")
    if agg["classes"]:
        lines += ["", "Per-class IoU (points, mean ± std over seeds):", ""]
        head = ["entry", "aAcc", "mAcc"] + list(agg["classes"])
        lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for e in agg["entries"]:
            cells = [f"`{e['name']}`", _pm(e["aAcc"]), _pm(e["mAcc"])] + [_pm(e["IoU"][c]) for c in agg["classes"]]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + claims_markdown(agg)
    rep = agg.get("replication")
    if rep:
        r = rep["aggregate"]
        lines += ["## Replication", "",
                  f"The same plan trained again on seeds {r['seed_start']}..{r['seed_start'] + r['seeds'] - 1} "
                  f"({r['runs_done']} of {r['runs_total']} runs finished). A verdict is *replicated* when both seed "
                  "ranges decide it the same way (two *cannot tell* are *undecided in both*).", "", "| claim | seeds " + f"{first}..{last}" + " | replication | status |",
                  "|---|---|---|---|"]
        for row in rep["status"]:
            lines.append(f"| {row['id']} | {VERDICT_TEXT[row['first']]} | {VERDICT_TEXT.get(row['second'], '-')} | "
                         f"{row['status']} |")
        lines.append("")
    lines += ["", "![mIoU against MACs](compare.png)", ""]
    return "\n".join(lines)


def _entry_rows(agg: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows = []
    for e in agg["entries"]:
        s, c, v = e["mIoU"], e.get("cost", {}), e.get("vs_reference") or {}
        row = {"entry": e["name"], "setting": e["describe"], "seeds": len(e["seeds"]), "mIoU_mean": s["mean"],
               "mIoU_std": s["std"], "mIoU_ci_low": s["ci_low"], "mIoU_ci_high": s["ci_high"],
               "diff_vs_ref": v.get("mean"), "diff_ci_low": v.get("ci_low"), "diff_ci_high": v.get("ci_high"),
               "diff_p": v.get("p"), "diff_boot_low": (v.get("bootstrap") or {}).get("low"),
               "diff_boot_high": (v.get("bootstrap") or {}).get("high"), "params": c.get("params"),
               "macs": c.get("macs"), "context_macs": c.get("context_macs"), "latency_ms": c.get("latency_ms"),
               "train_step_mem_mb": c.get("train_step_mem_mb"), "train_wall_s": e.get("train_wall_s")}
        row.update({f"IoU_{k}": e["IoU"][k]["mean"] for k in agg["classes"]})
        rows.append(row)
    return rows


def _csv(rows: List[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()})
    return buf.getvalue()


def _run_rows(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows = []
    for r in sorted(results, key=lambda r: (r["entry"], r["seed"])):
        m, c = r["metrics"], r["cost"]
        row = {"entry": r["entry"], "seed": r["seed"], "mIoU": m["mIoU"], "aAcc": m["aAcc"], "mAcc": m["mAcc"],
               "params": c["params"], "macs": c["macs"], "context_macs": c["context_macs"],
               "latency_ms": c["latency_ms"], "train_step_mem_mb": c["train_step_mem_mb"],
               "train_wall_s": r["train"]["wall_s"], "iterations": r["train"]["iterations"],
               "commit": r.get("provenance", {}).get("commit")}
        row.update({f"IoU_{k}": v for k, v in m["IoU"].items()})
        rows.append(row)
    return rows


def plot(agg: Dict[str, Any], path: Path) -> Optional[Path]:
    """mIoU (mean, error bar = 95 % t-interval, or ± std when only that exists) against GMACs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for e in agg["entries"]:
        s, c = e["mIoU"], e.get("cost")
        if not c or s["n"] == 0:
            continue
        x = c["macs"] / 1e9
        err = s["half_width"] if s["n"] >= 2 else 0.0
        ax.errorbar([x], [s["mean"]], yerr=[[err], [err]], fmt="o", capsize=4, label=e["name"])
        ax.annotate(e["name"], (x, s["mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("GMACs per image (whole model, eval size)")
    ax.set_ylabel("mIoU (%), mean and 95 % t-interval over seeds")
    ax.set_title(f"{agg['plan']} on {agg['dataset']}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110)
    plt.close(fig)
    from segattn.io import atomic_write_bytes

    return atomic_write_bytes(path, buf.getvalue())


def default_command(plan: Plan, dataset: str, seeds: int, out: Union[str, Path], first_seed: int = 0) -> str:
    first = f" --first-seed {first_seed}" if first_seed else ""
    return f"segattn compare {plan.name} --dataset {dataset} --seeds {seeds}{first} --out {out}"


def write_report(plan: Plan, out: Union[str, Path], dataset: str, report_dir: Optional[Union[str, Path]] = None,
                 seeds: Optional[int] = None, command: Optional[str] = None, resamples: int = 2000,
                 replicate: bool = False, first_seed: int = 0) -> Dict[str, Any]:
    """Aggregate the runs under ``out`` (seeds ``first_seed ..``) and write the report files into
    ``report_dir`` (default ``out``).

    With a separate ``report_dir`` the runs' ``result.json`` files are copied there too (no
    checkpoints), so the folder is self-contained: ``segattn compare PLAN --report-only --out DIR``
    rebuilds the same report from it.
    """
    out = Path(out)
    target = Path(report_dir) if report_dir is not None else out
    n_seeds = seeds or plan.seeds
    results = collect(out)
    agg = aggregate(plan, results, dataset, n_seeds, resamples, seed_start=first_seed)
    if replicate:  # the disjoint seed range s+n .. s+2n-1 (see `segattn compare --replicate`)
        second = aggregate(plan, results, dataset, n_seeds, resamples, seed_start=first_seed + n_seeds)
        agg["replication"] = {"aggregate": second, "status": replication(agg["claims"], second["claims"])}
    cmd = command or default_command(plan, dataset, n_seeds, out, first_seed) + (" --replicate" if replicate else "")
    agg["command"] = cmd
    target.mkdir(parents=True, exist_ok=True)
    if target.resolve() != out.resolve():
        for path in sorted(out.glob(f"runs/*/seed*/{RESULT}")):
            dest = target / path.relative_to(out)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        if (out / "plan.json").is_file():
            shutil.copyfile(out / "plan.json", target / "plan.json")
    from segattn.engine.metrics import json_safe

    paths = {"markdown": target / "compare.md", "json": target / "compare.json", "csv": target / "compare.csv",
             "runs_csv": target / "runs.csv", "headline": target / "headline.md"}
    atomic_write_text(paths["markdown"], markdown(agg, cmd))
    atomic_write_text(paths["headline"], headline(agg) + "\n")
    atomic_write_json(paths["json"], json_safe(agg))
    atomic_write_text(paths["csv"], _csv(_entry_rows(agg)))
    atomic_write_text(paths["runs_csv"], _csv(_run_rows(results)))
    png = plot(agg, target / "compare.png")
    if png is not None:
        paths["plot"] = png
    return {"aggregate": agg, "paths": {k: str(v) for k, v in paths.items()}}


def headline(agg: Dict[str, Any]) -> str:
    """A compact table (mIoU, Δ vs reference, cost) and the verdict of each claim, for a README."""
    ref = agg["reference"]
    lines = [f"| entry | seeds | mIoU | Δ vs `{ref}` (95 % CI) | params (M) | GMACs | train-step mem (MiB) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for e in agg["entries"]:
        if not e["seeds"]:
            continue
        v, c = e.get("vs_reference"), e.get("cost", {})
        if v and v["n"]:
            delta = f"{v['mean']:+.1f}" + (f" {_ci(v['ci_low'], v['ci_high'], True)}" if v["n"] >= 2 else "")
        else:
            delta = "(reference)" if e["name"] == ref else "-"
        lines.append(f"| `{e['name']}` | {len(e['seeds'])} | {_pm(e['mIoU'])} | {delta} | {_num(c.get('params'), 1e6)} | "
                     f"{_num(c.get('macs'), 1e9, 3)} | {_num(c.get('train_step_mem_mb'), 1, 0)} |")
    lines.append("")
    for c in agg["claims"]:
        lines.append(f"- {c['id']}. {c['text']}: **{VERDICT_TEXT[c['verdict']]}**")
    return "\n".join(lines)
