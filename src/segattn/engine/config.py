"""Run configuration: typed pydantic models, read from YAML or JSON, overridden with ``a.b=c`` strings.

A config file is a mapping with the sections below (every key optional). Every key has a type and a
range (its field type, :mod:`segattn.engine.config_checks`); they are checked when the config is loaded, before
any data or model is built, and a bad one is a :class:`ConfigError` naming the key, the value given
and what is expected. Unknown keys are an error too, with the closest accepted key as a suggestion.
Numbers may be written in scientific notation (``1e-3``) in files and in ``--set``; booleans are
``true``/``false`` (``yes``/``no``/``on``/``off`` too), never "any non-empty text".

One optional ``_base_: other.yaml`` key (a path relative to the file, or the name of a file shipped
under ``segattn/configs``) deep-merges the file on top of its base; a base may itself have a base.
That is the only inheritance there is.

Example (YAML)::

    _base_: ../_base_/camvid_cpu.yaml
    model: {name: ccnet, backbone: resnet18, output_stride: 8}
    schedule: {iters: 4000}

The parts: :mod:`segattn.engine.config_checks` (types and ranges on pydantic), :mod:`segattn.engine.config_schema`
(the sections and the rules between keys), :mod:`segattn.engine.config_files` (files, ``_base_``,
overrides); this module gathers them under one import path.

``--set schedule.iters=100 --set optim.lr=1e-3`` applies overrides; values are parsed as YAML
(so ``[1, 2]``, ``true``, ``null`` and numbers work) or, without PyYAML, as JSON, else kept as text.
"""

from __future__ import annotations

from segattn.engine.config_checks import ConfigError
from segattn.engine.config_files import (
    CONFIG_DIR,
    apply_overrides,
    deep_merge,
    list_configs,
    load_config,
    load_config_dict,
    parse_value,
    resolve_config_path,
    save_config,
    with_init,
)
from segattn.engine.config_schema import (
    MAX_EVAL_SCALE,
    Config,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    config_differences,
    config_from_dict,
)

__all__ = [
    "CONFIG_DIR", "MAX_EVAL_SCALE", "Config", "ConfigError", "DataConfig", "EvalConfig", "LossConfig",
    "ModelConfig", "OptimConfig", "ScheduleConfig", "TrainConfig", "apply_overrides", "config_differences", "config_from_dict",
    "deep_merge", "list_configs", "load_config", "load_config_dict", "parse_value", "resolve_config_path",
    "save_config", "with_init",
]
