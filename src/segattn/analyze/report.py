"""The analysis report (``analysis.md`` / ``.json`` / ``.csv`` / ``.png``): spread over seeds, the
controls, the claims of :mod:`segattn.analyze.claims` and, for a plan trained with ``--replicate``,
the same claims judged on the second seed range.

Runs are grouped by entry (the compare entry name; a checkpoint's config name otherwise) and paired
by seed, as ``segattn compare`` pairs them.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from segattn import stats
from segattn.analyze.claims import EXPLANATIONS, collapsed_runs, controls, group, judge, make_claims, values
from segattn.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from segattn.stats import summarize

NAN = float("nan")
VERDICT_TEXT = {"holds": "holds", "does not hold": "does not hold", "cannot tell": "cannot tell at this scale"}
# the columns of the two entry tables: (metric, label, digits)
ACCURACY = [("miou_clean", "mIoU", 1), ("drop_noise_0.1", "drop σ=0.1", 1), ("drop_fgsm_0.007843", "drop FGSM 2/255", 1),
            ("drop_pgd20_0.007843", "drop PGD-20 2/255", 1), ("pgd_masking_0.007843", "PGD 20 − 10 steps", 2),
            ("acc_small", "acc small", 1), ("meanrow_drop", "mean-row drop", 1)]
MECHANISMS = [("erank_path_ratio", "erank path/in", 2), ("fisher_gain_path", "Fisher path/in", 2),
              ("denoise_index_out", "denoise out", 2), ("denoise_index_path", "denoise path", 2),
              ("roughness_ratio", "roughness out/in", 2), ("boundary_ratio", "boundary out/in", 2),
              ("bases_relative_cosine", "bases rel. cos", 2), ("bases_gram_erank_fraction", "Gram erank/K", 2),
              ("bases_recon_error_small", "recon err small", 2), ("cf_logits", "cf logits", 3)]


# ------------------------------------------------------------------------------------------ tables
def _entries(groups: Dict[str, Dict[int, Dict[str, Any]]]) -> List[Dict[str, Any]]:
    collapsed = collapsed_runs(groups)
    entries = []
    for name, runs in groups.items():
        seeds = sorted(runs)
        first = runs[seeds[0]]
        keys = sorted({k for r in runs.values() for k, v in r.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)} - {"seed", "seconds", "images",
                                                                                       "em_stages"})
        row: Dict[str, Any] = {"name": name, "module": first.get("module"), "em_stages": first.get("em_stages"),
                               "seeds": seeds, "collapsed": collapsed.get(name, []),
                               "metrics": {k: summarize(values(runs, k, seeds)) for k in keys}}
        row["em_curves"] = {k: [summarize([runs[s][k][t] for s in seeds if k in runs[s]])["mean"]
                                for t in range(len(first[k]))]
                            for k in first if k.startswith("em_") and isinstance(first[k], list)}
        entries.append(row)
    return entries


def _seed_range(groups: Dict[str, Dict[int, Dict[str, Any]]], lo: int, hi: Optional[int]) -> Dict[str, Dict[int, Dict[str, Any]]]:
    out = {e: {s: r for s, r in runs.items() if s >= lo and (hi is None or s < hi)} for e, runs in groups.items()}
    return {e: runs for e, runs in out.items() if runs}


def aggregate(results: Sequence[Dict[str, Any]], split: Optional[int] = None) -> Dict[str, Any]:
    """Per entry and metric: summary over seeds; the EM curves' means; the controls; the judged claims.

    ``split`` (a plan trained with ``--replicate`` on seeds ``0 .. 2n-1``: ``split = n``): the entry
    table and the claims use the seeds below ``split``; the claims are judged again on the seeds from
    ``split`` on (``replication``: both verdicts and :func:`segattn.stats.agree` per claim)."""
    groups = group(results)
    first = _seed_range(groups, 0, split) if split else groups
    claims = judge(make_claims(first), first)
    agg: Dict[str, Any] = {"entries": _entries(first), "controls": controls(groups), "claims": claims,
                           "runs": sum(len(r) for r in first.values())}
    if split:
        second = _seed_range(groups, split, None)
        status = []
        if second:
            again = {c["id"]: c["verdict"] for c in judge(make_claims(second), second)}
            status = [{"id": c["id"], "first": c["verdict"], "second": again.get(c["id"]),
                       "status": stats.agree(c["verdict"], again.get(c["id"]))} for c in claims]
        agg["replication"] = {"split": split, "runs": sum(len(r) for r in second.values()), "status": status}
    return agg


def _pm(s: Optional[Dict[str, float]], digits: int) -> str:
    if not s or s["n"] == 0 or math.isnan(s["mean"]):
        return "-"
    if s["n"] == 1 or math.isnan(s["std"]):
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _ci(d: Dict[str, Any]) -> str:
    lo, hi = d.get("ci_low", NAN), d.get("ci_high", NAN)
    if math.isnan(lo) or math.isnan(hi):
        return "no interval"
    return f"[{lo:+.3g}, {hi:+.3g}]"


def describe_claim(c: Dict[str, Any]) -> str:
    d = c["diff"]
    n = d.get("n", 0)
    if n == 0:
        return "no seed with both values"
    if c["kind"] in ("below", "above"):
        v = d["value"]
        side = "threshold − value" if c["kind"] == "below" else "value − threshold"
        if c.get("scale") == "log":
            side = "log " + side.replace(" − ", " − log ")
        mean = "geometric mean " if c.get("scale") == "log" else ""
        left = f" ({v['nonpositive']} value(s) <= 0 left out: not a ratio)" if v.get("nonpositive") else ""
        return (f"{c['metric']} = {mean}{_pm(v, 3)} over {n} seed(s){left}; null {c['threshold']:g}, "
                f"{side} 95 % CI {_ci(d)}, {_tests(d)}")
    what = f"{c['metric']}: `{c['a']}` − `{c['b']}`" if c["higher"] else f"{c['metric']}: `{c['b']}` − `{c['a']}`"
    return f"{what} = {d['mean']:+.3g} over {n} seed(s), 95 % CI {_ci(d)}, {_tests(d)}"


def _p(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def _tests(d: Dict[str, Any]) -> str:
    return f"t-test p = {_p(d.get('p_t'))} (Holm {_p(d.get('p_t_adj'))}), sign-flip p = {_p(d.get('p_perm'))}"


def _other(c: Dict[str, Any]) -> str:
    nc = (c.get("variants") or {}).get("non_collapsed")
    if not nc or nc["verdict"] == c["verdict"]:
        return ""
    return f" [without collapsed runs: {VERDICT_TEXT[nc['verdict']]}]"


def _table(agg: Dict[str, Any], columns: List[Any]) -> List[str]:
    columns = [c for c in columns if any(e["metrics"].get(c[0], {}).get("n") for e in agg["entries"])]
    head = ["entry", "module", "seeds"] + [lab for _, lab, _ in columns]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|" + "---:|" * len(columns)]
    for e in agg["entries"]:
        cells = [f"`{e['name']}`", str(e["module"]) + (f" T={e['em_stages']}" if e["em_stages"] else ""),
                 str(len(e["seeds"]))] + [_pm(e["metrics"].get(k), d) for k, _, d in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _em_section(agg: Dict[str, Any]) -> List[str]:
    emas = [e for e in agg["entries"] if e["em_curves"]]
    if not emas:
        return []
    lines = ["## EM iterations", "",
             "From each trained model's bases, t = 1..5 EM iterations on its own validation features "
             "(means over seeds); and its mIoU and counterfactual cue flow evaluated with T = 1, 3, 5 iterations.", "",
             "| entry | quantity | t=1 | t=2 | t=3 | t=4 | t=5 |", "|---|---|---:|---:|---:|---:|---:|"]
    for e in emas:
        for k, vals in e["em_curves"].items():
            lines.append(f"| `{e['name']}` | {k} | " + " | ".join(f"{v:.4g}" for v in vals) + " |")
    lines += ["", "| entry | mIoU at T=1 | T=3 | T=5 | cf logits at T=1 | T=3 | T=5 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for e in emas:
        lines.append(f"| `{e['name']}` | " + " | ".join(_pm(e["metrics"].get(f"miou_T{t}"), 1) for t in (1, 3, 5))
                     + " | " + " | ".join(_pm(e["metrics"].get(f"cf_logits_T{t}"), 3) for t in (1, 3, 5)) + " |")
    lines += ["", "Within each run (`segattn.analyze.claims.derive`): mIoU(T=1) − mIoU(own T); pooled J out at own T "
              "− at T = 1; cf logits at own T / at T = 1; the share of the module-input gradient that survives the "
              "EM cut (cut / exact).", "",
              "| entry | swap gain | iter J gain | iter cf ratio | grad kept |", "|---|---:|---:|---:|---:|"]
    for e in emas:
        lines.append(f"| `{e['name']}` | " + " | ".join(_pm(e["metrics"].get(k), d) for k, d in (
            ("swap_gain", 2), ("iter_sep_gain", 2), ("iter_cf_ratio", 2), ("grad_kept", 2))) + " |")
    return lines + [""]


def _controls_section(agg: Dict[str, Any]) -> List[str]:
    rows = [c for c in agg.get("controls", []) if c["runs"]]
    if not rows:
        return []
    lines = ["## Controls", "", "Known answers measured on the same inputs as the modules; a claim is read only when "
             "the controls of its explanation pass (every run inside the expected range).", "",
             "| control | what it shows | expected | runs | mean | min | max | passes |", "|---|---|---|---:|---:|---:|---:|---|"]
    for c in rows:
        lo, hi = c["expected"]
        lines.append(f"| {c['name']} | {c['shows']} | [{lo:g}, {hi:g}] | {c['runs']} | {c['mean']:.3g} | {c['min']:.3g} | "
                     f"{c['max']:.3g} | {'yes' if c['ok'] else '**no**'} |")
    return lines + [""]


def _replication_line(c: Dict[str, Any], rep: Dict[str, Dict[str, Any]]) -> str:
    r = rep.get(c["id"])
    if r is None:
        return ""
    return f"; replication: {VERDICT_TEXT.get(r['second'] or '', 'not measured')} → **{r['status']}**"


def markdown(agg: Dict[str, Any], command: str) -> str:
    rep_info = agg.get("replication")
    seeds = sorted({s for e in agg["entries"] for s in e["seeds"]})
    span = f"seeds {seeds[0]}..{seeds[-1]}" if seeds else "no seeds"
    lines = ["# `segattn analyze`: the survey's explanations, measured", "", "```bash", command, "```", "",
             f"{agg['runs']} run(s), {span}. Every value is the mean ± standard deviation over seeds of a per-run "
             "number; definitions on the docs pages *Analyze* (section *Metrics that test the statements*) and "
             "*The survey's explanations*. Drops in mIoU points; the other columns are dimensionless ratios.", ""]
    if rep_info:
        lines += [f"Replication: the claims are judged again on the seeds from {rep_info['split']} on "
                  f"({rep_info['runs']} run(s)); a verdict is *replicated* when both seed ranges decide it the same way "
                  "(two *cannot tell* are *undecided in both*).", ""]
    lines += ["## Accuracy and robustness", ""] + _table(agg, ACCURACY)
    lines += ["## Mechanisms", ""] + _table(agg, MECHANISMS)
    lines += _controls_section(agg) + _em_section(agg)
    coll = [f"`{e['name']}` {len(e['collapsed'])}/{len(e['seeds'])}" for e in agg["entries"] if e.get("collapsed")]
    lines += ["## Claims", "",
              "One-sided tests at 0.025 over seeds; the t-test p-values of this report form one family, Holm-adjusted. "
              "A claim holds when its adjusted t-test and its exact sign-flip permutation test both pass (at least "
              f"{stats.MIN_SEEDS} seeds), does not hold when the 95 % interval lies on the other side of its null, and "
              "is *cannot tell at this scale* otherwise (see `segattn.stats`). Robustness is compared with the "
              "no-context entry only where the clean mIoU match within 1 point. Collapsed runs (clean mIoU at the "
              "no-context entry's level): " + (", ".join(coll) if coll else "none") + "; verdicts on all runs, "
              "with the verdict on the other runs in brackets where it differs.", ""]
    rep = {r["id"]: r for r in (rep_info or {}).get("status", [])}
    for key, title in EXPLANATIONS.items():
        cs = [c for c in agg["claims"] if c["explanation"] == key]
        if not cs:
            continue
        lines += [f"**{key}. {title}**", ""]
        lines += [f"- {c['text']}: **{VERDICT_TEXT[c['verdict']]}**{_other(c)}{_replication_line(c, rep)} "
                  f"({describe_claim(c)})" for c in cs]
        lines.append("")
    lines += ["![robustness and EM iterations](analysis.png)", ""]
    return "\n".join(lines)


def _rows(results: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows = []
    for r in results:
        row = {"entry": r.get("entry"), "seed": r.get("seed"), "module": r.get("module"), "em_stages": r.get("em_stages")}
        row.update({k: v for k, v in sorted(r.items()) if isinstance(v, (int, float)) and not isinstance(v, bool)
                    and k not in row})
        rows.append(row)
    return rows


def _csv(rows: List[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields: List[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()})
    return buf.getvalue()


def plot(agg: Dict[str, Any], path: Path) -> Optional[Path]:
    """Three panels: mIoU under noise per entry; EM responsibility entropy per iteration; the cue mass per
    iteration (synthetic set) or, where no cue was measured, the bases' mean pairwise cosine."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for e in agg["entries"]:
        m = e["metrics"]
        xs = [0.0, 0.05, 0.1]
        ys = [m.get(k, {}).get("mean", NAN) for k in ("miou_clean", "miou_noise_0.05", "miou_noise_0.1")]
        axes[0].plot(xs, ys, "o-", label=e["name"])
    # third panel: the cue mass where the synthetic set's cue was measured, else the bases' spread
    cue = any(any(math.isfinite(v) for v in e["em_curves"].get("em_cue_mass", [])) for e in agg["entries"])
    third = "em_cue_mass" if cue else "em_bases_cosine"
    for e in agg["entries"]:
        for ax, key in ((axes[1], "em_entropy"), (axes[2], third)):
            if key in e["em_curves"]:
                ax.plot(range(1, len(e["em_curves"][key]) + 1), e["em_curves"][key], "o-", label=e["name"])
    axes[0].set(xlabel="input noise σ", ylabel="mIoU (%)", title="accuracy under input noise")
    axes[1].set(xlabel="EM iteration t", ylabel="H(Z) / log K", title="responsibility entropy")
    if cue:
        axes[2].set(xlabel="EM iteration t", ylabel="attention mass on the cue", title="cue mass (shape pixels)")
    else:
        axes[2].set(xlabel="EM iteration t", ylabel="mean pairwise cosine", title="bases' similarity")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def write_report(results: Sequence[Dict[str, Any]], out: Union[str, Path], command: str,
                 split: Optional[int] = None) -> Dict[str, Any]:
    """Write ``analysis.md``, ``analysis.json``, ``analysis_runs.csv`` and ``analysis.png`` into ``out``
    (``split``: see :func:`aggregate`)."""
    from segattn.engine.metrics import json_safe

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(results, split)
    agg["command"] = command
    paths = {"markdown": out / "analysis.md", "json": out / "analysis.json", "csv": out / "analysis_runs.csv"}
    atomic_write_text(paths["markdown"], markdown(agg, command))
    atomic_write_json(paths["json"], json_safe({**agg, "per_run": list(results)}))
    atomic_write_text(paths["csv"], _csv(_rows(results)))
    png = plot(agg, out / "analysis.png")
    if png is not None:
        paths["plot"] = png
    return {"aggregate": agg, "paths": {k: str(v) for k, v in paths.items()}}


__all__ = ["aggregate", "make_claims", "judge", "write_report", "markdown"]
