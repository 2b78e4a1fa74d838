"""``segattn analyze``: the survey's explanations of why context modules work, measured on trained models.

    from segattn.analyze import analyze_run
    analyze_run("outputs/compare/survey-table-synthetic/runs/ema-T3/seed0")   # -> dict, analysis.json

Pure metrics (formula, averaging, unit in each docstring): :mod:`segattn.analyze.metrics`; the
measurements on a model and its validation set: :mod:`segattn.analyze.measure`; loading runs and
storing results: :mod:`segattn.analyze.run`; seeds, claims and the report: :mod:`segattn.analyze.report`.
"""

from segattn.analyze.metrics import (
    accuracy_by_area,
    class_separation,
    effective_rank,
    entropy_ratio,
    mean_pairwise_cosine,
    mean_pairwise_tv,
    noise_to_signal_gain,
    reconstruction_error,
    total_variation_distance,
)
from segattn.analyze.run import analyze_model, analyze_run, load_run

__all__ = ["accuracy_by_area", "class_separation", "effective_rank", "entropy_ratio", "mean_pairwise_cosine",
           "mean_pairwise_tv", "noise_to_signal_gain", "reconstruction_error", "total_variation_distance",
           "analyze_model", "analyze_run", "load_run"]
