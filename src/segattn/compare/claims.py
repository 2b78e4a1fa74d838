"""Claims of a comparison judged from the runs: one decision rule per claim kind, collapsed runs
counted apart, one Holm family per report, and replication on a disjoint seed range.

The rules (formulas in ``docs/compare.md``; the tests in :mod:`segattn.stats`), ``d`` the paired
per-seed mIoU differences ``a - b`` in points and ``δ`` the plan's margin:

* ``better`` (superiority): the test "mean d > 0";
* ``no_gain``: "mean d < δ"; ``not_worse`` (non-inferiority): "mean d > −δ";
* ``equivalent``: two one-sided tests (TOST) "mean d > −δ" and "mean d < δ", for every pair of entries;
* ``fewer_collapses``: Fisher's exact test "a's collapse rate is below b's" (:func:`segattn.stats.fisher_test`);
* ``cheaper``: the context modules' MACs (exact, no statistics): holds when ``a <= ratio * b``.

A **collapsed** run is one that stayed at the no-context baseline: its mIoU is at or below the best
run of the plan's reference entry (same seed range) although its own entry's median is above it.
Every claim is judged twice, on all runs and on the runs that did not collapse (seeds where either
side collapsed are left out of a paired difference); each variant is its own Holm family, and the
plan's ``verdict_runs`` (``all`` unless stated) says which one is *the* verdict.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence

from segattn import stats

NAN = float("nan")
Runs = Dict[str, Dict[int, Dict[str, Any]]]  # entry -> seed -> result.json
VARIANTS = ("all", "non_collapsed")


def miou(run: Dict[str, Any]) -> float:
    """A run's mIoU in points (NaN when missing)."""
    v = run.get("metrics", {}).get("mIoU")
    return NAN if v is None else 100.0 * float(v)


def collapsed_runs(by_entry: Runs, reference: str) -> Dict[str, List[int]]:
    """Seeds of each entry whose run collapsed (:func:`segattn.stats.collapsed` on the runs' mIoU)."""
    return stats.collapsed({n: {s: miou(r) for s, r in runs.items()} for n, runs in by_entry.items()}, reference)


def _differences(by_entry: Runs, a: str, b: str, drop: Dict[str, List[int]]) -> Dict[str, Any]:
    seeds = sorted((set(by_entry[a]) & set(by_entry[b])) - set(drop.get(a, [])) - set(drop.get(b, [])))
    d = [miou(by_entry[a][s]) - miou(by_entry[b][s]) for s in seeds]
    keep = [i for i, v in enumerate(d) if not math.isnan(v)]
    return {"seeds": [seeds[i] for i in keep], "d": [d[i] for i in keep]}


def rule_test(kind: str, d: Sequence[float], margin: float) -> Dict[str, Any]:
    """The test of one paired comparison under the claim kind's rule (before the Holm adjustment)."""
    neg = [-v for v in d]
    if kind == "better":
        t = stats.one_sided(d, 0.0)
    elif kind == "no_gain":
        t = stats.one_sided(neg, -margin)
    elif kind == "not_worse":
        t = stats.one_sided(d, -margin)
    elif kind == "equivalent":
        t = stats.combine_all([stats.one_sided(d, -margin), stats.one_sided(neg, -margin)])
    else:
        raise ValueError(f"unknown claim kind {kind!r}")
    summary = stats.summarize(d)
    return {"rule": kind, **summary, "p_t": t["p_t"], "p_perm": t["p_perm"], "refuted": t["refuted"],
            "p_two_sided": stats.paired(d, [0.0] * len(d))["p"] if d else NAN}


def _cost_test(claim: Any, by_entry: Runs) -> Dict[str, Any]:
    macs = {}
    for name in (claim.a, claim.b):
        runs = by_entry[name]
        macs[name] = float(runs[min(runs)]["cost"]["context_macs"]) if runs else NAN
    a, b = macs[claim.a], macs[claim.b]
    frac = a / b if b and not math.isnan(a) and not math.isnan(b) else NAN
    verdict = "cannot tell" if math.isnan(frac) else "holds" if frac <= claim.ratio else "does not hold"
    return {"a": claim.a, "b": claim.b, "a_macs": a, "b_macs": b, "fraction": frac, "ratio": claim.ratio,
            "verdict": verdict}


def _tests(claim: Any, by_entry: Runs, margin: float, drop: Dict[str, List[int]]) -> List[Dict[str, Any]]:
    if claim.kind == "fewer_collapses":
        counts = {n: (len(collapsed_runs_for(by_entry, n, drop)), len(by_entry[n])) for n in (claim.a, claim.b)}
        t = stats.fisher_test(*counts[claim.a], *counts[claim.b])
        return [{"a": claim.a, "b": claim.b, "rule": "fewer_collapses", **t}]
    if claim.kind == "equivalent":
        names = claim.entries
        pairs = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    else:
        pairs = [(claim.a, claim.b)]
    out = []
    for a, b in pairs:
        diff = _differences(by_entry, a, b, drop)
        out.append({"a": a, "b": b, "seeds": diff["seeds"], **rule_test(claim.kind, diff["d"], margin)})
    return out


def collapsed_runs_for(by_entry: Runs, name: str, drop: Dict[str, List[int]]) -> List[int]:
    """The collapsed seeds of ``name`` (``drop`` holds them for every entry)."""
    return [s for s in drop.get(name, []) if s in by_entry[name]]


def judge_claims(claims: Sequence[Any], by_entry: Runs, margin: float, reference: str,
                 verdict_runs: str = "all") -> List[Dict[str, Any]]:
    """Every claim on all runs and on non-collapsed runs, each variant one Holm family.

    Returns per claim ``{"id", "text", "kind", "variants": {"all": {...}, "non_collapsed": {...}},
    "verdict_runs", "verdict", "tests"}`` where ``tests`` / ``verdict`` are those of ``verdict_runs``.
    """
    collapsed = collapsed_runs(by_entry, reference)
    out = [{"id": c.id, "text": c.text, "kind": c.kind, "variants": {}} for c in claims]
    for variant in VARIANTS:
        # collapse claims count the collapsed runs; in "all" nothing is dropped from the differences
        drop = collapsed if variant == "non_collapsed" else {}
        family: List[Dict[str, Any]] = []
        per_claim = []
        for c in claims:
            if c.kind == "cheaper":
                tests = [_cost_test(c, by_entry)]
            elif c.kind == "fewer_collapses":
                tests = _tests(c, by_entry, margin, collapsed)
                family += tests
            else:
                tests = _tests(c, by_entry, margin, drop)
                family += tests
            per_claim.append(tests)
        stats.decide(family)
        for row, tests in zip(out, per_claim):
            row["variants"][variant] = {"tests": tests, "verdict": stats.overall([t["verdict"] for t in tests])}
    for row in out:
        chosen = row["variants"][verdict_runs]
        row.update({"verdict_runs": verdict_runs, "verdict": chosen["verdict"], "tests": chosen["tests"]})
    return out


def replication(first: Sequence[Dict[str, Any]], second: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per claim id: the verdicts on both seed ranges and whether they agree."""
    other = {c["id"]: c["verdict"] for c in second}
    return [{"id": c["id"], "first": c["verdict"], "second": other.get(c["id"]),
             "status": stats.agree(c["verdict"], other.get(c["id"]))} for c in first]


# ------------------------------------------------------------------------------------------ text
VERDICT_TEXT = {"holds": "holds", "does not hold": "does not hold", "cannot tell": "cannot tell at this scale"}
RULE_TEXT = {
    "better": "superiority: holds when the Holm-adjusted one-sided t-test of mean d > 0 and the exact sign-flip "
              "test both give p < {a}; does not hold when the 95 % interval of d lies below 0",
    "no_gain": "adds nothing: holds when both tests give mean d < +{m} at p < {a}; does not hold when the interval "
               "lies above +{m}",
    "not_worse": "non-inferiority: holds when both tests give mean d > −{m} at p < {a}; does not hold when the "
                 "interval lies below −{m}",
    "equivalent": "equivalence by two one-sided tests at ±{m} (both tests, both sides, p < {a}); does not hold "
                  "when the interval lies entirely outside ±{m}",
    "fewer_collapses": "Fisher's exact test (one-sided, Holm-adjusted, p < {a}) that a collapses less often than b; "
                       "does not hold when the opposite one-sided test gives p < {a}",
    "cheaper": "the context modules' MACs (exact): holds when a's are at most `ratio` times b's",
}


def _p(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def _ci(lo: float, hi: float) -> str:
    if math.isnan(lo) or math.isnan(hi):
        return "no interval"
    return f"[{lo:+.2f}, {hi:+.2f}]"


def describe_test(t: Dict[str, Any]) -> str:
    """One sentence: the compared quantity, its interval, raw and adjusted p and the permutation p."""
    if t.get("rule") == "fewer_collapses":
        return (f"`{t['a']}` collapsed in {t['a_count']}/{t['a_runs']} runs, `{t['b']}` in {t['b_count']}/"
                f"{t['b_runs']}: Fisher exact p = {_p(t['p_t'])} (Holm {_p(t.get('p_t_adj'))})")
    if "fraction" in t:
        if math.isnan(t["fraction"]):
            return f"`{t['a']}` / `{t['b']}` context MACs: no finished run of both (or `{t['b']}` has none)"
        return (f"`{t['a']}` {t['a_macs'] / 1e6:.3f} M / `{t['b']}` {t['b_macs'] / 1e6:.3f} M context MACs = "
                f"{t['fraction']:.3f} (bound {t['ratio']:g})")
    n = t["n"]
    if n == 0:
        return f"`{t['a']}` − `{t['b']}`: no seed finished for both"
    text = f"`{t['a']}` − `{t['b']}` = {t['mean']:+.2f} points over {n} seed{'s' if n != 1 else ''}"
    if n < 2:
        return text + " (one seed: no test)"
    what = "TOST: larger one-sided t-test p" if t.get("rule") == "equivalent" else "one-sided t-test p"
    return (text + f" (95 % CI {_ci(t['ci_low'], t['ci_high'])}; {what} = {_p(t['p_t'])}, "
            f"Holm-adjusted {_p(t.get('p_t_adj'))}; exact sign-flip p = {_p(t['p_perm'])})")


def claims_markdown(agg: Dict[str, Any]) -> List[str]:
    """The *Claims* section of ``compare.md``."""
    margin, alpha = agg["margin"], agg.get("alpha", stats.ALPHA)
    kinds = sorted({c["kind"] for c in agg["claims"]})
    lines = ["## Claims", "",
             f"Tests are one-sided at {alpha:g} (the level of the 95 % interval); d = paired per-seed mIoU "
             f"difference a − b in points, margin {margin:g}. The t-test p-values of this report's claims form one "
             "family, Holm-adjusted; a claim holds only when its adjusted t-test and its exact sign-flip "
             "permutation test both pass, which needs at least "
             f"{stats.MIN_SEEDS} seeds (with {agg['seeds']} seeds the smallest permutation p is "
             f"{_p(2.0 ** -agg['seeds'])}). While the interval straddles a rule's boundary the verdict is "
             "*cannot tell at this scale*. Rules used here:", ""]
    lines += [f"- `{k}`: " + RULE_TEXT[k].format(m=f"{margin:g}", a=f"{alpha:g}") for k in kinds if k in RULE_TEXT]
    coll = [f"`{e['name']}` {len(e['collapsed'])}/{len(e['seeds'])}" for e in agg["entries"] if e.get("collapsed")]
    lines += ["", "Collapsed runs (mIoU at or below the best run of the reference entry while the entry's median is "
              "above it): " + (", ".join(coll) if coll else "none") + ". Each claim is judged on all runs and on the "
              "runs that did not collapse (each its own Holm family); the first verdict is the one stated.", ""]
    if not agg["claims"]:
        lines.append("(this plan states no claims)" if not agg.get("claims_elsewhere")
                     else "(this plan states no claim for this task)")
    elsewhere = [f"{c['id']} ({', '.join(c['protocols'])})" for c in agg.get("claims_elsewhere") or []]
    if elsewhere:
        lines += [f"Not judged on this task (each is a claim about the tasks named): {', '.join(elsewhere)}.", ""]
    rep = {r["id"]: r for r in (agg.get("replication") or {}).get("status", [])}
    for c in agg["claims"]:
        other = "non_collapsed" if c["verdict_runs"] == "all" else "all"
        alt = c["variants"][other]["verdict"]
        head = f"- **{c['id']}. {c['text']}** — {VERDICT_TEXT[c['verdict']]}"
        head += f" (on {c['verdict_runs'].replace('_', '-')} runs; on {other.replace('_', '-')} runs: {VERDICT_TEXT[alt]})"
        if c["id"] in rep:
            r = rep[c["id"]]
            head += f"; replication: {VERDICT_TEXT.get(r['second'], '-')} → **{r['status']}**"
        lines.append(head + ".")
        for t in c["tests"]:
            lines.append(f"  - {describe_test(t)}: {VERDICT_TEXT[t['verdict']]}.")
    lines.append("")
    return lines
