"""Spread over seeds, claims and the report (``analysis.md`` / ``.json`` / ``.csv`` / ``.png``).

Runs are grouped by entry (the compare entry name; a checkpoint's config name otherwise) and paired
by seed, as ``segattn compare`` pairs them. Each explanation of the survey becomes claims, generated
from the entries present (their module and EM iteration count) and judged with the accuracy claims'
rules (:func:`segattn.compare.stats.verdict` on the 95 % t-interval over seeds):

* ``better`` (a paired difference ``a - b``, oriented so that positive favours the claim): holds when
  the interval lies above 0, does not hold when it lies below the claim's margin;
* ``below`` (a one-sample statement ``value < threshold``): the same rule on ``threshold - value``
  with margin 0: holds when the whole interval of the value lies below the threshold, does not hold
  when it lies above it; ``above`` (``value > threshold``): the rule on ``value - threshold`` with
  the claim's margin (0 unless stated). Within-run differences (:func:`derive`) use these.

Anything else, or fewer than two seeds, is *cannot tell at this scale*.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from segattn.compare.stats import paired, summarize, verdict
from segattn.io import atomic_write_bytes, atomic_write_json, atomic_write_text

NAN = float("nan")
VERDICT_TEXT = {"holds": "holds", "does not hold": "does not hold", "cannot tell": "cannot tell at this scale"}
NOISE_KEY, FGSM_KEY = "drop_noise_0.1", "drop_fgsm_0.007843"
# the columns of the entry table: (metric, label, digits)
TABLE = [("miou_clean", "mIoU", 1), (NOISE_KEY, "drop σ=0.1", 1), (FGSM_KEY, "drop FGSM 2/255", 1),
         ("nsr_gain", "NSR gain", 2), ("separation_ratio", "J out/in", 2), ("erank_in", "erank in", 1),
         ("erank_out", "erank out", 1), ("erank_rec", "erank rec", 1), ("bases_cosine", "bases cos", 2),
         ("bases_recon_error", "recon err", 2), ("acc_small", "acc small", 1), ("tv_diff_class", "TV diff-class", 3),
         ("cue_mass", "cue mass", 3), ("pooled_separation_in", "pooled J in", 2),
         ("pooled_separation_out", "pooled J out", 2), ("grad_backbone_cut", "‖∂L/∂f‖", 4)]


def derive(r: Dict[str, Any]) -> Dict[str, Any]:
    """A run's analysis plus the within-run differences the EM claims use (EMA runs only):

    * ``swap_gain`` = mIoU at T = 1 − mIoU at the trained T (points);
    * ``iter_sep_gain`` = pooled J of the module output at the trained T − at T = 1 (positive: the
      iterations after the first make the foreground classes less separable);
    * ``iter_cue_loss`` = cue mass after iteration 1 − after iteration T (positive: the iterations
      move the shape pixels' attention off the cue);
    * ``grad_kept`` = ‖∂L/∂r‖ with the EM cut / exact, at the module input (1 = the cut loses nothing).
    """
    out = dict(r)
    t = r.get("em_stages")
    if t:
        def get(key: str) -> float:
            v = r.get(key)
            return float(v) if isinstance(v, (int, float)) else NAN

        out["swap_gain"] = get("miou_T1") - get(f"miou_T{t}")
        out["iter_sep_gain"] = get(f"pooled_separation_T{t}") - get("pooled_separation_T1")
        cue = r.get("em_cue_mass") or []
        out["iter_cue_loss"] = cue[0] - cue[t - 1] if len(cue) >= t else NAN
    cut, exact = r.get("grad_module_in_cut"), r.get("grad_module_in_exact")
    if isinstance(cut, (int, float)) and isinstance(exact, (int, float)) and exact > 0:
        out["grad_kept"] = cut / exact
    return out


def group(results: Sequence[Dict[str, Any]]) -> Dict[str, Dict[int, Dict[str, Any]]]:
    """``{entry: {seed: analysis with derived values}}`` in the order entries first appear."""
    out: Dict[str, Dict[int, Dict[str, Any]]] = {}
    for r in results:
        out.setdefault(str(r.get("entry")), {})[int(r.get("seed") or 0)] = derive(r)
    return out


def _vals(runs: Dict[int, Dict[str, Any]], key: str, seeds: Sequence[int]) -> List[float]:
    out = []
    for s in seeds:
        v = runs[s].get(key)
        out.append(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else NAN)
    return out


# ------------------------------------------------------------------------------------------ claims
def _claim(cid: str, text: str, kind: str, metric: str, a: str, b: Optional[str] = None, higher: bool = True,
           margin: float = 0.0, threshold: Optional[float] = None, explanation: str = "") -> Dict[str, Any]:
    return {"id": cid, "text": text, "kind": kind, "metric": metric, "a": a, "b": b, "higher": higher,
            "margin": margin, "threshold": threshold, "explanation": explanation}


def make_claims(groups: Dict[str, Dict[int, Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """The claims that the entries present allow (see the module docstring)."""
    module = {e: next(iter(r.values())).get("module", "") for e, r in groups.items()}
    stages = {e: next(iter(r.values())).get("em_stages") for e, r in groups.items()}
    ref = next((e for e, m in module.items() if m == "identity"), None)
    ctx = [e for e, m in module.items() if m not in ("identity", "")]
    claims: List[Dict[str, Any]] = []
    for e in ctx:
        if ref is not None:
            claims.append(_claim(f"1n.{e}", f"`{e}` loses less mIoU than `{ref}` under input noise σ = 0.1",
                                 "better", NOISE_KEY, ref, e, higher=True, margin=1.0, explanation="1"))
            claims.append(_claim(f"1f.{e}", f"`{e}` loses less mIoU than `{ref}` under FGSM ε = 2/255",
                                 "better", FGSM_KEY, ref, e, higher=True, margin=1.0, explanation="1"))
        claims.append(_claim(f"1m.{e}", f"`{e}`'s module lowers the noise-to-signal ratio of its input (gain < 1)",
                             "below", "nsr_gain", e, threshold=1.0, explanation="1"))
        claims.append(_claim(f"2.{e}", f"`{e}`'s module lowers within-class variance relative to between-class "
                                       "distance (J out/in < 1)", "below", "separation_ratio", e, threshold=1.0,
                             explanation="2"))
        claims.append(_claim(f"3.{e}", f"`{e}`'s output has an effective rank far below its input's (ratio < 0.5)",
                             "below", "erank_ratio", e, threshold=0.5, explanation="3"))
    emas = [e for e in ctx if module[e] == "ema"]
    t1 = next((e for e in emas if stages[e] == 1), emas[0] if emas else None)
    for other in [e for e in ctx if module[e] in ("a2", "ppm", "apcnet")]:
        if t1 is None:
            break
        claims.append(_claim(f"4c.{other}", f"EM bases (`{t1}`) are less similar to each other than `{other}`'s",
                             "better", "bases_cosine", other, t1, higher=True, margin=0.05, explanation="4"))
        claims.append(_claim(f"4r.{other}", f"EM bases (`{t1}`) reconstruct their features better than `{other}`'s",
                             "better", "bases_recon_error", other, t1, higher=True, margin=0.05, explanation="4"))
        claims.append(_claim(f"4s.{other}", f"`{t1}` is more accurate on small segments than `{other}`",
                             "better", "acc_small", t1, other, higher=True, margin=1.0, explanation="4"))
    for e in ctx:
        if module[e].startswith("nonlocal"):
            claims.append(_claim(f"5q.{e}", f"`{e}`'s attention is query-independent: two query pixels of different "
                                            "classes attend alike (mean TV distance < 0.2)", "below", "tv_diff_class",
                                 e, threshold=0.2, explanation="5"))
    # the cue claims need the synthetic set's cue (cue mass is measured there only)
    cue = any(_has_cue(r) for runs in groups.values() for r in runs.values())
    for e in emas:
        if t1 is None or e == t1:
            continue
        if cue:
            claims.append(_claim(f"5t.{e}", f"`{e}` carries less of the cue to the shapes than `{t1}` (cue mass)",
                                 "better", "cue_mass", t1, e, higher=True, margin=0.0, explanation="5"))
        claims.append(_claim(f"5s.{e}", f"`{e}` evaluated with T = 1 is more accurate than with its own T",
                             "above", "swap_gain", e, threshold=0.0, margin=1.0, explanation="5"))
        claims.append(_claim(f"5i.{e}", f"in `{e}`, the EM iterations after the first make the foreground pixels' "
                                        "classes less separable across images (pooled J out at its T above J out "
                                        "at T = 1)",
                             "above", "iter_sep_gain", e, threshold=0.0, explanation="5"))
        if cue:
            claims.append(_claim(f"5m.{e}", f"in `{e}`, the EM iterations after the first move the shape pixels' "
                                            "attention off the cue (cue mass after iteration 1 above after T)",
                                 "above", "iter_cue_loss", e, threshold=0.0, explanation="5"))
        claims.append(_claim(f"5g.{e}", f"the EM gradient cut loses more of the gradient at the module input in "
                                        f"`{e}` than in `{t1}`", "better", "grad_kept", e, t1, higher=False,
                             margin=0.05, explanation="5"))
    return claims


def _has_cue(run: Dict[str, Any]) -> bool:
    """Whether a run measured the synthetic set's cue mass (after training or per EM iteration)."""
    values = [run.get("cue_mass"), *(run.get("em_cue_mass") or [])]
    return any(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _claim_values(claim: Dict[str, Any], groups: Dict[str, Dict[int, Dict[str, Any]]]) -> Dict[str, Any]:
    a = groups.get(claim["a"], {})
    if claim["kind"] in ("below", "above"):
        seeds = sorted(a)
        vals = _vals(a, claim["metric"], seeds)
        sign = 1.0 if claim["kind"] == "below" else -1.0
        d = summarize([sign * (claim["threshold"] - v) for v in vals])
        return {"seeds": seeds, "value": summarize(vals), **d}
    b = groups.get(claim["b"], {})
    seeds = sorted(set(a) & set(b))
    va, vb = _vals(a, claim["metric"], seeds), _vals(b, claim["metric"], seeds)
    keep = [i for i in range(len(seeds)) if not (math.isnan(va[i]) or math.isnan(vb[i]))]
    va, vb, seeds = [va[i] for i in keep], [vb[i] for i in keep], [seeds[i] for i in keep]
    diff = paired(va, vb) if claim["higher"] else paired(vb, va)
    return {"seeds": seeds, **diff}


def judge(claims: Sequence[Dict[str, Any]], groups: Dict[str, Dict[int, Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """Each claim with its numbers (``diff``: mean, std, 95 % t-interval over seeds) and verdict."""
    out = []
    for c in claims:
        diff = _claim_values(c, groups)
        margin = 0.0 if c["kind"] == "below" else c["margin"]  # "above": its own margin (0 unless set)
        out.append({**c, "diff": diff, "verdict": verdict("better", diff, margin)})
    return out


# ------------------------------------------------------------------------------------------ tables
def aggregate(results: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Per entry and metric: summary over seeds; the EM curves' means; the judged claims."""
    groups = group(results)
    entries = []
    for name, runs in groups.items():
        seeds = sorted(runs)
        first = runs[seeds[0]]
        keys = sorted({k for r in runs.values() for k, v in r.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)} - {"seed", "seconds", "images",
                                                                                       "em_stages"})
        row: Dict[str, Any] = {"name": name, "module": first.get("module"), "em_stages": first.get("em_stages"),
                               "seeds": seeds, "metrics": {k: summarize(_vals(runs, k, seeds)) for k in keys}}
        curves = {k: [summarize([runs[s][k][t] for s in seeds if k in runs[s]])["mean"]
                      for t in range(len(first[k]))] for k in first if k.startswith("em_") and isinstance(first[k], list)}
        row["em_curves"] = curves
        entries.append(row)
    claims = judge(make_claims(groups), groups)
    return {"entries": entries, "claims": claims, "runs": len(results)}


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
        return (f"{c['metric']} = {_pm(v, 3)} over {n} seed(s); threshold {c['threshold']:g}, "
                f"{side} 95 % CI {_ci(d)}" + (f", margin {c['margin']:g}" if c["kind"] == "above" and c["margin"] else ""))
    what = f"{c['metric']}: `{c['a']}` − `{c['b']}`" if c["higher"] else f"{c['metric']}: `{c['b']}` − `{c['a']}`"
    return f"{what} = {d['mean']:+.3g} over {n} seed(s), 95 % CI {_ci(d)}, margin {c['margin']:g}"


EXPLANATIONS = {"1": "Denoising", "2": "Edge-preserving smoothing", "3": "Low-rank reconstruction",
                "4": "Bases: representative, few, dissimilar", "5": "Query independence and EM iterations"}


def markdown(agg: Dict[str, Any], command: str) -> str:
    lines = ["# `segattn analyze`: the survey's explanations, measured", "", "```bash", command, "```", "",
             f"{agg['runs']} run(s). Every value is the mean ± standard deviation over seeds of a per-run number; "
             "definitions in `segattn.analyze.metrics` / `segattn.analyze.measure` (and the Analyze page of the "
             "docs). Drops in mIoU points; NSR gain, J out/in, cosines, errors, TV and cue mass dimensionless; "
             "‖∂L/∂f‖ is the gradient norm at the backbone output (EM cut as in training).", ""]
    head = ["entry", "module", "seeds"] + [lab for _, lab, _ in TABLE]
    lines += ["| " + " | ".join(head) + " |", "|---|---|---:|" + "---:|" * len(TABLE)]
    for e in agg["entries"]:
        cells = [f"`{e['name']}`", str(e["module"]) + (f" T={e['em_stages']}" if e["em_stages"] else ""),
                 str(len(e["seeds"]))] + [_pm(e["metrics"].get(k), d) for k, _, d in TABLE]
        lines.append("| " + " | ".join(cells) + " |")
    emas = [e for e in agg["entries"] if e["em_curves"]]
    if emas:
        lines += ["", "## EM iterations", "",
                  "From each trained model's bases, t = 1..5 EM iterations on its own validation features "
                  "(means over seeds); and its mIoU evaluated with T = 1, 3, 5 iterations.", ""]
        lines += ["| entry | quantity | t=1 | t=2 | t=3 | t=4 | t=5 |", "|---|---|---:|---:|---:|---:|---:|"]
        for e in emas:
            for k, vals in e["em_curves"].items():
                lines.append(f"| `{e['name']}` | {k} | " + " | ".join(f"{v:.4g}" for v in vals) + " |")
        lines += ["", "| entry | mIoU at T=1 | T=3 | T=5 | pooled J out at T=1 | T=3 | T=5 |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for e in emas:
            lines.append(f"| `{e['name']}` | " + " | ".join(_pm(e["metrics"].get(f"miou_T{t}"), 1) for t in (1, 3, 5))
                         + " | " + " | ".join(_pm(e["metrics"].get(f"pooled_separation_T{t}"), 2) for t in (1, 3, 5))
                         + " |")
        lines += ["", "Within each run (`derive`): mIoU(T=1) − mIoU(own T); pooled J out at own T − at T = 1; cue "
                  "mass after iteration 1 − after iteration T; and the share of the module-input gradient "
                  "that survives the EM cut (cut / exact).", "",
                  "| entry | swap gain | iter J gain | iter cue loss | grad kept |", "|---|---:|---:|---:|---:|"]
        for e in emas:
            lines.append(f"| `{e['name']}` | " + " | ".join(_pm(e["metrics"].get(k), d) for k, d in (
                ("swap_gain", 2), ("iter_sep_gain", 2), ("iter_cue_loss", 3), ("grad_kept", 2))) + " |")
    lines += ["", "## Claims", "", "Judged from the 95 % t-interval over seeds (see `segattn.analyze.report`).", ""]
    for key, title in EXPLANATIONS.items():
        cs = [c for c in agg["claims"] if c["explanation"] == key]
        if not cs:
            continue
        lines += [f"**{key}. {title}**", ""]
        lines += [f"- {c['text']}: **{VERDICT_TEXT[c['verdict']]}** ({describe_claim(c)})" for c in cs]
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


def write_report(results: Sequence[Dict[str, Any]], out: Union[str, Path], command: str) -> Dict[str, Any]:
    """Write ``analysis.md``, ``analysis.json``, ``analysis_runs.csv`` and ``analysis.png`` into ``out``."""
    from segattn.engine.metrics import json_safe

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(results)
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
