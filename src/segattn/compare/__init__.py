"""``segattn compare``: train every entry of an experiment plan over several seeds under one protocol,
and report accuracy with error bars, cost, paired differences and claim-by-claim verdicts.

    from segattn.compare import run_plan
    run_plan("survey-table", dataset="synthetic", seeds=8, out="outputs/compare/survey-table-synthetic")

Plans: :mod:`segattn.compare.plan`; runs and resume: :mod:`segattn.compare.runner`; statistics:
:mod:`segattn.stats` (judged in :mod:`segattn.compare.claims`); report: :mod:`segattn.compare.report`.
"""

from segattn.compare.plan import (
           Claim,
           Entry,
           Plan,
           PlanError,
           ablate_reasoners,
           list_plans,
           load_plan,
           plan_from_dict,
)
from segattn.compare.report import aggregate, collect, write_report
from segattn.compare.runner import run_plan

__all__ = ["Claim", "Entry", "Plan", "PlanError", "list_plans", "load_plan", "plan_from_dict", "aggregate",
           "collect", "write_report", "ablate_reasoners", "run_plan"]
