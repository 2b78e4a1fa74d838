"""Hub-format model folders: ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``, and ``weights_info``.

One import path for the three modules that implement them (kept for existing imports):
:mod:`segattn.models.folder` (the folder written and read), :mod:`segattn.models.hub` (Hub repo ids)
and :mod:`segattn.models.pretrained` (models built from a folder). Nothing below
:mod:`segattn.models.factory` imports this module.
Backbone checkpoint reading and key remapping live in :mod:`segattn.checkpoints`.
"""

from __future__ import annotations

from segattn.models.folder import (
    CARD_FILE,
    CONFIG_FILE,
    HUB_FORMAT_VERSION,
    SAFETENSORS_FILE,
    TORCH_FILE,
    TRAINING_CONFIG_FILE,
    StateDict,
    hub_config,
    load_pretrained_state,
    model_card,
    pretrained_meta,
    pretrained_run_config,
    pretrained_weights_path,
    read_pretrained_config,
    safetensors_available,
    save_pretrained,
)
from segattn.models.hub import is_pretrained_source, push_to_hub, resolve_pretrained
from segattn.models.pretrained import WeightsInfo, from_pretrained, model_macs, weights_info

__all__ = [
    "CARD_FILE", "CONFIG_FILE", "HUB_FORMAT_VERSION", "SAFETENSORS_FILE", "TORCH_FILE", "TRAINING_CONFIG_FILE",
    "StateDict", "WeightsInfo", "from_pretrained", "hub_config", "is_pretrained_source", "load_pretrained_state",
    "model_card", "model_macs", "pretrained_meta", "pretrained_run_config", "pretrained_weights_path",
    "push_to_hub", "read_pretrained_config", "resolve_pretrained", "safetensors_available", "save_pretrained",
    "weights_info",
]
