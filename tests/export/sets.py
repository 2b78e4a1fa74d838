"""Which models the export / compile tests cover in CI and in the full run."""

from __future__ import annotations

import os
from typing import List

import segattn
from segattn.registry import MODELS, MODULES

ALL_MODELS = segattn.list_models()
TINY = {"backbone": "resnet18", "channels": 16}
# ``SEGATTN_EXPORT_ALL=1`` runs the registry-wide export / compile checks for every model; CI runs the
# representative set below (every model with adaptive pooling and one model per module family).
RUN_ALL = os.environ.get("SEGATTN_EXPORT_ALL", "") not in ("", "0")


def families(name: str) -> List[str]:
    return sorted({MODULES.meta(c).get("family", "?") for c in MODELS.meta(name)["context"]}) or ["none"]


def representative_models() -> List[str]:
    """Every model with adaptive pooling, then the first model (alphabetical) of each family not yet
    covered; ``fcn`` stands for models without a context module."""
    pooled = ["ann", "apcnet", "deeplabv3", "dmnet", "pspnet"]  # checked by test_adaptive_pooling_models_listed
    chosen, covered = list(pooled), {f for n in pooled for f in families(n)}
    for name in segattn.list_models():
        new = set(families(name)) - covered
        if new and name not in ("generic", "carafe"):
            chosen.append(name)
            covered |= new
    return sorted(chosen)
