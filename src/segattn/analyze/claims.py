"""The survey's explanations as claims over seeds, their controls, and their verdicts.

Each explanation (numbered as on the docs page *The survey's explanations*) becomes claims, generated
from the entries present (their module and EM iteration count) and from the metrics their runs
measured (a claim whose metric no run has is not stated), and judged with the tests of
:mod:`segattn.stats` (one Holm family per report; holds = Holm-adjusted one-sided t-test and exact
sign-flip test both below 0.025; does not hold = the 95 % interval on the other side of the null):

1. low-rank reconstruction: the context path's effective rank against its input's
   (``erank_path_ratio < 0.5``) and the classes' Fisher ratio on it against on the input
   (``fisher_gain_path > 1.1``: "easier to classify");
2. denoising: the module's and its context path's denoising index (noise passed per unit of centred
   signal passed, ``< 0.9``); robustness to input noise and PGD against a matched control (clean mIoU
   within 1 point) that does no per-pixel averaging: the no-context entry, or else GCNet;
3. edge-preserving smoothing: the within-class roughness out / in ``< 0.9`` (scale-free: a module's
   output has its own units) and boundary contrast out / in ``> 0.9``: both must hold;
4. bases: EM bases (EMA T = 1) against pooled / A2 bases: relative cosine, Gram effective rank / K,
   reconstruction error on small segments, accuracy on small segments;
5. EM iterations: the counterfactual flow of the cue into the shape pixels' logits (``cf_logits``)
   across entries and within a run (own T against T = 1, ratio ``> 1.1``); the mIoU with T = 1 swapped
   in, the pooled separation across iterations, the gradient the EM cut keeps;
6. query independence: the mIoU lost when every attention row is replaced by the image's mean row
   (``meanrow_drop < 1`` point).

Kinds: ``better`` (a paired difference ``a - b``, oriented so that positive favours the claim: the
test "mean difference > 0"; the claim's ``margin`` is shown, it does not move the boundary) and
``below`` / ``above`` (a one-sample statement whose null, margin included, is in its text: the test
"mean of ``threshold - value`` > 0", or ``value - threshold``; for the positive ratios of
:data:`RATIO_METRICS` "mean of ``log threshold - log value`` > 0", or its negative, and the value shown
is the geometric mean).

Runs that *collapsed* (clean mIoU at the no-context entry's level, :func:`segattn.stats.collapsed`)
are counted per entry, and every claim is judged on all runs and on the others; the verdict stated
is the one on all runs, both are shown.

:func:`controls` checks, per report, that the controls measured beside the modules behave as their
known answers say (identity: index 1; 3 x 3 box filter: denoises and blurs edges; a label-aware
box filter (7 x 7, Local Relation's window): lowers the within-class roughness and keeps edges; the FCN's identity slot: every path ratio
1) before any verdict is read. (The no-context slot's counterfactual flow is not
a control: its input already sees the cue within the head's 3 x 3 convolutions, 0.07 on a trained
survey-table FCN.)
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from segattn import stats
from segattn.stats import paired, summarize

NAN = float("nan")
NOISE_KEY, PGD_KEY = "drop_noise_0.1", "drop_pgd20_0.007843"
MATCH = 1.0  # robustness is compared only between entries whose mean clean mIoU differ by at most this
EXPLANATIONS = {"1": "Low-rank reconstruction", "2": "Denoising", "3": "Edge-preserving smoothing",
                "4": "Bases: representative, few, dissimilar", "5": "EM iterations", "6": "Query independence"}


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else NAN


def _ratio(a: Any, b: Any) -> float:
    a, b = _num(a), _num(b)
    return a / b if b and not math.isnan(a) and not math.isnan(b) else NAN


def derive(r: Dict[str, Any]) -> Dict[str, Any]:
    """A run's analysis plus the within-run quantities the claims use:

    * ``erank_path_ratio`` = erank of the context path / erank of the module input;
    * ``within_ratio`` / ``between_ratio`` = output / input within- and between-class variance in the
      input's units (meaningful for maps in the input's scale: the filters, residual modules);
      ``within_frac_ratio`` = output / input within-class *share* of the map's own variance (scale-free:
      a function of J, descriptive); ``roughness_ratio`` = output / input within-class roughness
      (scale-free, blind to the distance between classes: the claims use it); ``boundary_ratio`` =
      output / input boundary contrast (scale-free); ``*_box3``
      the same for the 3 x 3 box filter, ``*_ebox7`` for the 7 x 7 label-aware one (the controls);
    * EMA runs: ``swap_gain`` = mIoU at T = 1 − mIoU at the trained T (points); ``iter_sep_gain`` =
      pooled J of the module output at the trained T − at T = 1; ``iter_cf_ratio`` = counterfactual
      change of the shape logits at the trained T / at T = 1 (above 1: the iterations after the first
      carry more of the cue);
    * ``grad_kept`` = ‖∂L/∂r‖ with the EM cut / exact, at the module input (1 = the cut loses nothing).
    """
    out = dict(r)
    out["erank_path_ratio"] = _ratio(r.get("erank_path"), r.get("erank_in"))
    for part in ("within", "between", "boundary_contrast", "within_frac", "roughness"):
        name = "boundary" if part == "boundary_contrast" else part
        for tag, suffix in (("", "out"), ("_box3", "box3"), ("_ebox7", "ebox7")):
            out[f"{name}_ratio{tag}"] = _ratio(r.get(f"{part}_{suffix}"), r.get(f"{part}_in"))
    t = r.get("em_stages")
    if t:
        out["swap_gain"] = _num(r.get("miou_T1")) - _num(r.get(f"miou_T{t}"))
        out["iter_sep_gain"] = _num(r.get(f"pooled_separation_T{t}")) - _num(r.get("pooled_separation_T1"))
        out["iter_cf_ratio"] = _ratio(r.get(f"cf_logits_T{t}"), r.get("cf_logits_T1"))
    out["grad_kept"] = _ratio(r.get("grad_module_in_cut"), r.get("grad_module_in_exact"))
    return out


def group(results: Sequence[Dict[str, Any]]) -> Dict[str, Dict[int, Dict[str, Any]]]:
    """``{entry: {seed: analysis with derived values}}`` in the order entries first appear."""
    out: Dict[str, Dict[int, Dict[str, Any]]] = {}
    for r in results:
        out.setdefault(str(r.get("entry")), {})[int(r.get("seed") or 0)] = derive(r)
    return out


def values(runs: Dict[int, Dict[str, Any]], key: str, seeds: Sequence[int]) -> List[float]:
    return [_num(runs[s].get(key)) for s in seeds]


def _has(groups: Dict[str, Dict[int, Dict[str, Any]]], entry: Optional[str], metric: str) -> bool:
    runs = groups.get(entry or "", {})
    return any(math.isfinite(v) for v in values(runs, metric, sorted(runs)))


def _mean(groups: Dict[str, Dict[int, Dict[str, Any]]], entry: str, metric: str) -> float:
    return summarize(values(groups[entry], metric, sorted(groups[entry])))["mean"]


# ------------------------------------------------------------------------------------------ claims
# Positive ratios (out / in, path / in, own T / T = 1): a one-sample claim on one of them is judged on
# log(value) against log(threshold), so that 2x and 1/2 are equally far from 1 and one run with a
# near-zero denominator cannot rule the interval; the value shown is the geometric mean.
RATIO_METRICS = ("erank_path_ratio", "fisher_gain_path", "denoise_index_out", "denoise_index_path",
                 "roughness_ratio", "boundary_ratio", "iter_cf_ratio")


def claim(cid: str, text: str, kind: str, metric: str, a: str, b: Optional[str] = None, higher: bool = True,
          margin: float = 0.0, threshold: Optional[float] = None, explanation: str = "") -> Dict[str, Any]:
    scale = "log" if kind in ("below", "above") and metric in RATIO_METRICS else "linear"
    return {"id": cid, "text": text, "kind": kind, "metric": metric, "a": a, "b": b, "higher": higher,
            "margin": margin, "threshold": threshold, "scale": scale, "explanation": explanation}


def _log(v: float) -> float:
    return math.log(v) if v > 0 else NAN


def _one_sample(c: Dict[str, Any], vals: List[float]) -> Tuple[List[float], Dict[str, float]]:
    """The test's values (oriented so that positive favours the claim) and the summary shown: on the
    log scale for :data:`RATIO_METRICS` (geometric mean and its interval; a value <= 0 is not a
    ratio: it is left out and counted in ``nonpositive``), else as measured."""
    sign = 1.0 if c["kind"] == "below" else -1.0
    if c.get("scale") != "log":
        return [sign * (c["threshold"] - v) for v in vals], summarize(vals)
    logs = [_log(v) for v in vals]
    s = summarize(logs)
    def back(key: str, least: int) -> float:
        return math.exp(s[key]) if s["n"] >= least else NAN

    shown = {"n": s["n"], "nonpositive": sum(1 for v in vals if not v > 0 and not math.isnan(v)), "std": NAN,
             "mean": back("mean", 1), "ci_low": back("ci_low", 2), "ci_high": back("ci_high", 2)}
    return [sign * (math.log(c["threshold"]) - l) for l in logs], shown


def _low_rank(e: str) -> List[Dict[str, Any]]:
    return [claim(f"1r.{e}", f"`{e}`'s context path (before any residual or concatenation) has an effective rank "
                             "far below its input's (null: erank path / in >= 0.5)", "below", "erank_path_ratio", e,
                  threshold=0.5, explanation="1"),
            claim(f"1f.{e}", f"the classes are easier to separate on `{e}`'s context path than on its input (LDA "
                             "Fisher ratio path / in above 1.1; null: <= 1.1)", "above", "fisher_gain_path", e,
                  threshold=1.1, explanation="1")]


def _robustness_control(e: str, module: Dict[str, str], groups: Dict[str, Dict[int, Dict[str, Any]]],
                        ref: Optional[str]) -> Optional[str]:
    """The entry ``e``'s robustness is compared with: the no-context entry ``ref``, or else GCNet, the
    context module without per-pixel averaging (input plus one vector per image: it passes pixel noise
    unchanged), whichever first has ``e``'s mean clean mIoU within :data:`MATCH`; None if neither."""
    gcnet = next((x for x, m in module.items() if m == "gcnet"), None)
    for r in (ref, gcnet):
        if r is not None and r != e and abs(_mean(groups, e, "miou_clean") - _mean(groups, r, "miou_clean")) <= MATCH:
            return r
    return None


def _denoising(e: str, control: Optional[str]) -> List[Dict[str, Any]]:
    out = [claim(f"2d.{e}", f"`{e}` passes at most 90 % of the input noise per unit of centred signal (null: "
                            "denoising index >= 0.9)", "below", "denoise_index_out", e, threshold=0.9, explanation="2"),
           claim(f"2a.{e}", f"`{e}`'s context path alone passes at most 90 % of the noise per unit of centred signal "
                            "(null: denoising index >= 0.9)", "below", "denoise_index_path", e, threshold=0.9,
                 explanation="2")]
    if control is not None:
        out += [claim(f"2n.{e}", f"`{e}` loses less mIoU than `{control}` (matched clean mIoU) under input noise "
                                 "σ = 0.1", "better", NOISE_KEY, control, e, margin=1.0, explanation="2"),
                claim(f"2p.{e}", f"`{e}` loses less mIoU than `{control}` (matched clean mIoU) under PGD, 20 steps, "
                                 "ε = 2/255", "better", PGD_KEY, control, e, margin=1.0, explanation="2")]
    return out


def _smoothing(e: str) -> List[Dict[str, Any]]:
    return [claim(f"3w.{e}", f"`{e}` smooths inside classes: it lowers the within-class roughness by at least 10 % "
                             "(scale-free; null: roughness out / in >= 0.9)", "below", "roughness_ratio", e,
                  threshold=0.9, explanation="3"),
            claim(f"3b.{e}", f"`{e}` keeps the contrast across label edges (boundary contrast out / in above 0.9; "
                             "null: <= 0.9)", "above", "boundary_ratio", e, threshold=0.9, explanation="3")]


def _bases(t1: str, other: str) -> List[Dict[str, Any]]:
    return [claim(f"4c.{other}", f"EM bases (`{t1}`) are less similar to each other than `{other}`'s (cosine "
                                 "relative to random pixel pairs of the same space)", "better",
                  "bases_relative_cosine", other, t1, margin=0.05, explanation="4"),
            claim(f"4k.{other}", f"EM bases (`{t1}`) span more directions than `{other}`'s (Gram effective rank / K)",
                  "better", "bases_gram_erank_fraction", t1, other, margin=0.05, explanation="4"),
            claim(f"4r.{other}", f"EM bases (`{t1}`) reconstruct small segments' features better than `{other}`'s",
                  "better", "bases_recon_error_small", other, t1, margin=0.05, explanation="4"),
            claim(f"4s.{other}", f"`{t1}` is more accurate on small segments than `{other}`", "better", "acc_small",
                  t1, other, margin=1.0, explanation="4")]


def _em(e: str, t1: str) -> List[Dict[str, Any]]:
    return [claim(f"5f.{e}", f"`{e}` carries more of the cue into the shape pixels' logits than `{t1}` "
                             "(counterfactual: cue colours swapped)", "better", "cf_logits", e, t1, explanation="5"),
            claim(f"5w.{e}", f"in `{e}`, its own T carries more of the cue than T = 1 on the same model (cf_logits "
                             "ratio above 1.1; null: <= 1.1)", "above", "iter_cf_ratio", e, threshold=1.1,
                  explanation="5"),
            claim(f"5s.{e}", f"`{e}` evaluated with T = 1 is more accurate than with its own T by more than 1 point "
                             "(null: gain <= 1)", "above", "swap_gain", e, threshold=1.0, explanation="5"),
            claim(f"5i.{e}", f"in `{e}`, the EM iterations after the first make the foreground pixels' classes less "
                             "separable across images (pooled J out at its T above J out at T = 1 by more than 1; "
                             "null: gain <= 1)", "above", "iter_sep_gain", e, threshold=1.0, explanation="5"),
            claim(f"5g.{e}", f"the EM gradient cut loses more of the gradient at the module input in `{e}` than in "
                             f"`{t1}`", "better", "grad_kept", e, t1, higher=False, margin=0.05, explanation="5")]


def make_claims(groups: Dict[str, Dict[int, Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """The claims that the entries present and the metrics their runs measured allow."""
    module = {e: next(iter(r.values())).get("module", "") for e, r in groups.items()}
    stages = {e: next(iter(r.values())).get("em_stages") for e, r in groups.items()}
    ref = next((e for e, m in module.items() if m == "identity"), None)
    ctx = [e for e, m in module.items() if m not in ("identity", "")]
    emas = [e for e in ctx if module[e] == "ema"]
    t1 = next((e for e in emas if stages[e] == 1), emas[0] if emas else None)
    claims: List[Dict[str, Any]] = []
    for e in ctx:
        claims += _low_rank(e) + _denoising(e, _robustness_control(e, module, groups, ref)) + _smoothing(e)
    if t1 is not None:
        for other in [e for e in ctx if module[e] in ("a2", "ppm", "apcnet")]:
            claims += _bases(t1, other)
        for e in [e for e in emas if e != t1]:
            claims += _em(e, t1)
    claims += [claim(f"6q.{e}", f"`{e}` works as if query-independent: every attention row replaced by the image's "
                                "mean row costs less than 1 mIoU point (null: drop >= 1)", "below", "meanrow_drop", e,
                     threshold=1.0, explanation="6") for e in ctx]
    return [c for c in claims if _has(groups, c["a"], c["metric"]) and (c["b"] is None or _has(groups, c["b"], c["metric"]))]


def _claim_values(c: Dict[str, Any], groups: Dict[str, Dict[int, Dict[str, Any]]],
                  drop: Dict[str, List[int]]) -> Dict[str, Any]:
    """The claim's values over its seeds (collapsed seeds in ``drop`` left out) and its one-sided test."""
    a = groups.get(c["a"], {})
    if c["kind"] in ("below", "above"):
        seeds = [s for s in sorted(a) if s not in drop.get(c["a"], [])]
        x, shown = _one_sample(c, values(a, c["metric"], seeds))
        return {"seeds": seeds, "value": shown, **stats.one_sided(x, 0.0)}
    b = groups.get(c["b"], {})
    seeds = sorted((set(a) & set(b)) - set(drop.get(c["a"], [])) - set(drop.get(c["b"], [])))
    va, vb = values(a, c["metric"], seeds), values(b, c["metric"], seeds)
    keep = [i for i in range(len(seeds)) if not (math.isnan(va[i]) or math.isnan(vb[i]))]
    va, vb, seeds = [va[i] for i in keep], [vb[i] for i in keep], [seeds[i] for i in keep]
    d = [x - y for x, y in zip(va, vb)] if c["higher"] else [y - x for x, y in zip(va, vb)]
    return {"seeds": seeds, **paired(d, [0.0] * len(d)), **stats.one_sided(d, 0.0)}


def collapsed_runs(groups: Dict[str, Dict[int, Dict[str, Any]]]) -> Dict[str, List[int]]:
    """Collapsed seeds per entry: clean mIoU at the level of the no-context (``identity``) entry."""
    ref = next((e for e, r in groups.items() if next(iter(r.values())).get("module") == "identity"), None)
    if ref is None:
        return {e: [] for e in groups}
    scores = {e: {s: _num(r.get("miou_clean")) for s, r in runs.items()} for e, runs in groups.items()}
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


# ---------------------------------------------------------------------------------------- controls
# (explanation, name, metric, which runs: "all", "identity" (the no-context entry) or "context" (the entries whose
# claims are read), low, high, what it shows)
CONTROLS = [
    ("1", "no-context slot: context path = input (Fisher gain 1)", "fisher_gain_path", "identity", 0.999, 1.001,
     "the Fisher gain reads 1 where nothing is reconstructed"),
    ("2", "identity map: denoising index 1", "denoise_index_identity", "all", 0.999, 1.001,
     "the index reads 1 where nothing is denoised"),
    ("2", "3 x 3 box filter denoises", "denoise_index_box3", "all", 0.0, 0.9, "the index detects a known denoiser"),
    ("3", "no-context slot: roughness ratio 1", "roughness_ratio", "identity", 0.999, 1.001,
     "the within-class roughness reads 1 on the identity"),
    ("3", "label-aware 7 x 7 box filter lowers the roughness", "roughness_ratio_ebox7", "context", 0.0, 0.9,
     "the within-class roughness detects the ideal edge-preserving smoother"),
    ("3", "label-aware 7 x 7 box filter keeps edges", "boundary_ratio_ebox7", "context", 1.0, 1000.0,
     "the boundary ratio rises under the ideal edge-preserving smoother"),
    ("3", "3 x 3 box filter blurs edges", "boundary_ratio_box3", "all", 0.0, 0.9,
     "the boundary ratio detects a smoother that does not preserve edges"),
]


def controls(groups: Dict[str, Dict[int, Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """Each control's mean over the runs it applies to and whether every run lies in its expected range
    (``ok`` None when no run measured it)."""
    module = {e: next(iter(r.values())).get("module", "") for e, r in groups.items()}
    out = []
    for explanation, name, metric, which, lo, hi, shows in CONTROLS:
        picked = [e for e in groups if which == "all" or (module[e] == "identity") == (which == "identity")]
        vals = [v for e in picked for v in values(groups[e], metric, sorted(groups[e])) if math.isfinite(v)]
        ok = all(lo <= v <= hi for v in vals) if vals else None
        out.append({"explanation": explanation, "name": name, "metric": metric, "expected": [lo, hi], "shows": shows,
                    "runs": len(vals),
                    "mean": sum(vals) / len(vals) if vals else NAN, "min": min(vals, default=NAN),
                    "max": max(vals, default=NAN), "ok": ok})
    return out


__all__ = ["EXPLANATIONS", "CONTROLS", "RATIO_METRICS", "derive", "group", "values", "claim", "make_claims",
           "collapsed_runs", "judge", "controls"]
