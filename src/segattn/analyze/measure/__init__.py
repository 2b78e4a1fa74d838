"""The five measurements of ``segattn analyze`` on a trained model and its validation set.

Each ``measure_*`` function takes an eval-mode model, a list of validation batches ``(images,
masks)`` and the dataset's ``num_classes`` / ``ignore_index``, and returns a flat dict of floats
(plus, for the EM diagnostics, per-iteration lists). Metric definitions: :mod:`segattn.analyze.metrics`.
The *module* of a model is its head's context slot (``model.head.context``; ``nn.Identity`` for the
FCN baseline, which thereby measures as the identity), else its outermost registered context module.
Its input is the reduced backbone feature ``r`` the module reads, its output what the head gets.

One file per measurement: ``robustness``, ``features``, ``segments``, ``em``, ``gradients``, ``survey``
(the metrics that test the survey's statements, issue 30); the
parts they share (the measured module, hooks, accuracy counts) in ``common``.
"""

# ruff: noqa: F401  (re-exports: the measurements and their shared parts, as before the split)
from __future__ import annotations

from segattn.analyze.measure.common import (
    FEATURE_NOISE,
    FGSM_EPS,
    MAX_QUERIES,
    NAN,
    NOISE_SIGMAS,
    Batches,
    Confusion,
    Log,
    Pooled,
    at_eval_scale,
    capture,
    context_slot,
    em_gradient_cut,
    em_mappers,
    em_stages,
    labels_at,
    logits_of,
    module_name,
    run_with_attention,
)
from segattn.analyze.measure.em import em_curves, measure_stage_swap
from segattn.analyze.measure.features import (
    apcnet_parts,
    attention_rows,
    lowrank_parts,
    measure_features,
    pyramid_parts,
)
from segattn.analyze.measure.gradients import measure_gradients
from segattn.analyze.measure.robustness import fgsm, measure_robustness, pgd, transfer_miou
from segattn.analyze.measure.segments import (
    MIN_SEGMENT_FRACTION,
    area_edges,
    measure_segments,
    segment_records_of,
)
from segattn.analyze.measure.survey import context_path, measure_survey, swap_cues, tap_context

__all__ = ["context_slot", "module_name", "measure_robustness", "measure_features", "measure_segments",
           "em_curves", "measure_stage_swap", "measure_gradients", "fgsm", "Confusion", "attention_rows",
           "lowrank_parts", "em_stages", "em_gradient_cut", "at_eval_scale", "pgd", "transfer_miou",
           "measure_survey", "context_path", "tap_context", "swap_cues"]
