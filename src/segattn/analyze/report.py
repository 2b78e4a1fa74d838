"""Spread over seeds, claims and the report (``analysis.md`` / ``.json`` / ``.csv`` / ``.png``).

Runs are grouped by entry (the compare entry name; a checkpoint's config name otherwise) and paired
by seed, as ``segattn compare`` pairs them. Each explanation of the survey becomes claims, generated
from the entries present (their module and EM iteration count) and judged with the tests of
:mod:`segattn.stats` (one Holm family per report; holds = Holm-adjusted one-sided t-test and exact
sign-flip test both below 0.025; does not hold = the 95 % interval on the other side of the null):

* ``better`` (a paired difference ``a - b``, oriented so that positive favours the claim): the test
  "mean difference > 0"; the claim's ``margin`` is shown, it does not move the boundary;
* ``below`` / ``above`` (a one-sample statement): the claim states its null, margin included
  (``nsr_gain < 0.9``, not ``< 1``): the test "mean of ``threshold - value`` > 0" (or
  ``value - threshold``). Within-run differences (:func:`derive`) use these.

Runs that *collapsed* (clean mIoU at the no-context entry's level, :func:`segattn.stats.collapsed`)
are counted per entry, and every claim is judged on all runs and on the others; the verdict stated
is the one on all runs, both are shown.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from segattn import stats
from segattn.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from segattn.stats import paired, summarize

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
        claims.append(_claim(f"1m.{e}", f"`{e}`'s module lowers the noise-to-signal ratio of its input by at least "
                                       "10 % (null: gain >= 0.9)", "below", "nsr_gain", e, threshold=0.9, explanation="1"))
        claims.append(_claim(f"2.{e}", f"`{e}`'s module lowers within-class variance relative to between-class "
                                       "distance by at least 10 % (null: J out/in >= 0.9)", "below", "separation_ratio", e,
                             threshold=0.9,
                             explanation="2"))
        claims.append(_claim(f"3.{e}", f"`{e}`'s output has an effective rank far below its input's (null: ratio >= 0.5)",
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
                                            "classes attend alike (null: mean TV distance >= 0.2)", "below", "tv_diff_class",
                                 e, threshold=0.2, explanation="5"))
    # the cue claims need the synthetic set's cue (cue mass is measured there only)
    cue = any(_has_cue(r) for runs in groups.values() for r in runs.values())
    for e in emas:
        if t1 is None or e == t1:
            continue
        if cue:
            claims.append(_claim(f"5t.{e}", f"`{e}` carries less of the cue to the shapes than `{t1}` (cue mass)",
                                 "better", "cue_mass", t1, e, higher=True, margin=0.0, explanation="5"))
        claims.append(_claim(f"5s.{e}", f"`{e}` evaluated with T = 1 is more accurate than with its own T by more than "
                                         "1 point (null: gain <= 1)", "above", "swap_gain", e, threshold=1.0,
                             explanation="5"))
        claims.append(_claim(f"5i.{e}", f"in `{e}`, the EM iterations after the first make the foreground pixels' "
                                        "classes less separable across images (pooled J out at its T above J out "
                                        "at T = 1 by more than 1; null: gain <= 1)",
                             "above", "iter_sep_gain", e, threshold=1.0, explanation="5"))
        if cue:
            claims.append(_claim(f"5m.{e}", f"in `{e}`, the EM iterations after the first move the shape pixels' "
                                            "attention off the cue (cue mass after iteration 1 above after T by more "
                                            "than 0.01; null: loss <= 0.01)",
                                 "above", "iter_cue_loss", e, threshold=0.01, explanation="5"))
        claims.append(_claim(f"5g.{e}", f"the EM gradient cut loses more of the gradient at the module input in "
                                        f"`{e}` than in `{t1}`", "better", "grad_kept", e, t1, higher=False,
                             margin=0.05, explanation="5"))
    return claims


def _has_cue(run: Dict[str, Any]) -> bool:
    """Whether a run measured the synthetic set's cue mass (after training or per EM iteration)."""
    values = [run.get("cue_mass"), *(run.get("em_cue_mass") or [])]
    return any(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _claim_values(claim: Dict[str, Any], groups: Dict[str, Dict[int, Dict[str, Any]]],
                  drop: Dict[str, List[int]]) -> Dict[str, Any]:
    """The claim's values over its seeds (collapsed seeds in ``drop`` left out) and its one-sided test."""
    a = groups.get(claim["a"], {})
    if claim["kind"] in ("below", "above"):
        seeds = [s for s in sorted(a) if s not in drop.get(claim["a"], [])]
        vals = _vals(a, claim["metric"], seeds)
        sign = 1.0 if claim["kind"] == "below" else -1.0
        x = [sign * (claim["threshold"] - v) for v in vals]
        return {"seeds": seeds, "value": summarize(vals), **stats.one_sided(x, 0.0)}
    b = groups.get(claim["b"], {})
    seeds = sorted((set(a) & set(b)) - set(drop.get(claim["a"], [])) - set(drop.get(claim["b"], [])))
    va, vb = _vals(a, claim["metric"], seeds), _vals(b, claim["metric"], seeds)
    keep = [i for i in range(len(seeds)) if not (math.isnan(va[i]) or math.isnan(vb[i]))]
    va, vb, seeds = [va[i] for i in keep], [vb[i] for i in keep], [seeds[i] for i in keep]
    d = [x - y for x, y in zip(va, vb)] if claim["higher"] else [y - x for x, y in zip(va, vb)]
    return {"seeds": seeds, **paired(d, [0.0] * len(d)), **stats.one_sided(d, 0.0)}


def collapsed_runs(groups: Dict[str, Dict[int, Dict[str, Any]]]) -> Dict[str, List[int]]:
    """Collapsed seeds per entry: clean mIoU at the level of the no-context (``identity``) entry."""
    ref = next((e for e, r in groups.items() if next(iter(r.values())).get("module") == "identity"), None)
    if ref is None:
        return {e: [] for e in groups}
    scores = {e: {s: float(r.get("miou_clean")) if isinstance(r.get("miou_clean"), (int, float)) else NAN
                  for s, r in runs.items()} for e, runs in groups.items()}
    return stats.collapsed(scores, ref)


def judge(claims: Sequence[Dict[str, Any]], groups: Dict[str, Dict[int, Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """Each claim with its numbers and verdict, on all runs (``diff``, ``verdict``) and on runs that did
    not collapse (``variants["non_collapsed"]``); each variant is one Holm family."""
    collapsed = collapsed_runs(groups)
    variants: Dict[str, List[Dict[str, Any]]] = {}
    for variant, drop in (("all", {}), ("non_collapsed", collapsed)):
        diffs = [_claim_values(c, groups, drop) for c in claims]
        stats.decide(diffs)
        variants[variant] = diffs
    out = []
    for i, c in enumerate(claims):
        d_all, d_nc = variants["all"][i], variants["non_collapsed"][i]
        out.append({**c, "diff": d_all, "verdict": d_all["verdict"],
                    "variants": {"non_collapsed": {"diff": d_nc, "verdict": d_nc["verdict"]}}})
    return out


# ------------------------------------------------------------------------------------------ tables
def aggregate(results: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Per entry and metric: summary over seeds; the EM curves' means; the judged claims."""
    groups = group(results)
    collapsed = collapsed_runs(groups)
    entries = []
    for name, runs in groups.items():
        seeds = sorted(runs)
        first = runs[seeds[0]]
        keys = sorted({k for r in runs.values() for k, v in r.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)} - {"seed", "seconds", "images",
                                                                                       "em_stages"})
        row: Dict[str, Any] = {"name": name, "module": first.get("module"), "em_stages": first.get("em_stages"),
                               "seeds": seeds, "collapsed": collapsed.get(name, []), "metrics": {k: summarize(_vals(runs, k, seeds)) for k in keys}}
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
        return (f"{c['metric']} = {_pm(v, 3)} over {n} seed(s); null {c['threshold']:g}, "
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
    coll = [f"`{e['name']}` {len(e['collapsed'])}/{len(e['seeds'])}" for e in agg["entries"] if e.get("collapsed")]
    lines += ["", "## Claims", "",
              "One-sided tests at 0.025 over seeds; the t-test p-values of this report form one family, Holm-adjusted. "
              "A claim holds when its adjusted t-test and its exact sign-flip permutation test both pass (at least "
              f"{stats.MIN_SEEDS} seeds), does not hold when the 95 % interval lies on the other side of its null, and "
              "is *cannot tell at this scale* otherwise (see `segattn.stats`). Collapsed runs (clean mIoU at the "
              "no-context entry's level): " + (", ".join(coll) if coll else "none") + "; verdicts on all runs, "
              "with the verdict on the other runs in brackets where it differs.", ""]
    for key, title in EXPLANATIONS.items():
        cs = [c for c in agg["claims"] if c["explanation"] == key]
        if not cs:
            continue
        lines += [f"**{key}. {title}**", ""]
        lines += [f"- {c['text']}: **{VERDICT_TEXT[c['verdict']]}**{_other(c)} ({describe_claim(c)})" for c in cs]
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
