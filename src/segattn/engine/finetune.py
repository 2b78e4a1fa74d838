"""Fine-tuning from a saved folder: ``segattn train --init FOLDER`` / config key ``model.init``.

The folder (``save_pretrained``, or ``segattn convert mmseg``) gives the architecture (model name and
every ``create_model`` keyword), the input normalisation (``data.mean`` / ``data.std``) and the eval
protocol (``eval.mode``, ``crop_size``, ``stride``, ``scales``, ``flip``); the config gives the data,
the schedule and, through its dataset, the class count. The order, last wins::

    config file (and its _base_)  <  the folder's settings  <  --set overrides

so ``--set eval.scales=[0.5]`` still changes what the folder says. The weights are loaded when a fresh
run starts (:func:`segattn.models.transfer.init_from_folder`: the class-count-shaped tensors start
fresh when the count differs), never on resume, eval or predict: the run's stored config already
describes the architecture.
"""

from __future__ import annotations

import os
from typing import Any, Dict

from segattn.engine.config_checks import ConfigError

# create_model keywords that are ModelConfig fields (the rest go to model.kwargs); their defaults are
# build_segmentor's, used when a folder was saved without them
MODEL_FIELDS = {"backbone": "resnet50", "output_stride": 8, "aux": True}
EVAL_KEYS = ("mode", "crop_size", "stride", "scales", "flip")


def init_settings(folder: str) -> Dict[str, Any]:
    """The config layer a folder gives: ``{"model": {...}, "data": {mean, std}, "eval": {...}}``.

    A path that is not a folder, a folder without a segattn ``config.json`` or one naming a model this
    segattn does not have is a :class:`ConfigError` (one line, naming the folder)."""
    from segattn.models.factory import list_models
    from segattn.models.folder import CONFIG_FILE, read_pretrained_config

    what = "a save_pretrained or `segattn convert mmseg` folder with config.json"
    if not isinstance(folder, str) or not folder.strip():
        raise ConfigError(f"config key model.init: got {folder!r}, expected {what}")
    if not os.path.isdir(folder):
        state = "a file" if os.path.exists(folder) else "not found"
        raise ConfigError(f"config key model.init: {folder!r} is {state}, expected {what}")
    try:
        config = read_pretrained_config(folder)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"config key model.init: {exc}; expected {what}") from None
    name = str(config["name"])
    if name not in list_models():
        raise ConfigError(f"config key model.init: {os.path.join(folder, CONFIG_FILE)} names model {name!r}, "
                          "which this segattn cannot build (`segattn models` lists the ones it can)")
    kwargs = dict(config.get("kwargs") or {})
    if not isinstance(config.get("kwargs", {}), dict):
        raise ConfigError(f"config key model.init: {os.path.join(folder, CONFIG_FILE)}: 'kwargs' is not a mapping")
    model: Dict[str, Any] = {"name": name, "init": folder, "pretrained": None}
    for key, default in MODEL_FIELDS.items():
        model[key] = kwargs.pop(key, default)
    kwargs.pop("pretrained", None)
    model["kwargs"] = kwargs
    mean, std = config.get("mean"), config.get("std")
    if mean is None or std is None:  # the model takes [0, 1] images
        mean, std = [0.0, 0.0, 0.0], [255.0, 255.0, 255.0]
    layer: Dict[str, Any] = {"model": model, "data": {"mean": list(mean), "std": list(std)}}
    ev = {k: v for k, v in (config.get("eval") or {}).items() if k in EVAL_KEYS and v is not None}
    if ev:
        layer["eval"] = ev
    return layer
