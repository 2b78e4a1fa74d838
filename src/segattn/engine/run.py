"""``segattn eval``: a checkpoint on the validation split with the config's eval settings (torchrun-aware).

Everything that can be checked cheaply is checked before the dataset is read and the model runs:
the checkpoint loads (plain data only) and fits the model its config describes, the device is
available, ``--out`` can be written (and does not exist unless ``overwrite``).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

from torch import nn
from torch.utils.data import DataLoader

from segattn.engine import build
from segattn.engine.checkpoint import load_checkpoint, model_state
from segattn.engine.config import apply_overrides, config_from_dict, load_config_dict, with_init
from segattn.engine.distributed import ShardSampler, cleanup, init_distributed, pick_device
from segattn.engine.evaluate import evaluate
from segattn.engine.metrics import json_safe
from segattn.errors import SegattnError, one_line
from segattn.io import atomic_write_json, check_writable_file


def read_checkpoint(path: str) -> Dict[str, Any]:
    """:func:`load_checkpoint` with every failure as one message naming ``path``."""
    try:
        return load_checkpoint(path)
    except (SegattnError, ValueError, OSError):
        raise  # already names the file
    except Exception as exc:  # a torch/pickle error deep inside the file
        raise SegattnError(f"cannot load checkpoint {path}: {one_line(str(exc), 300) or type(exc).__name__}") from None


def load_weights(model: nn.Module, ckpt: Dict[str, Any], path: str) -> None:
    """Load the model state of ``ckpt`` into ``model``; a mismatch is one message naming ``path``."""
    state = model_state(ckpt)
    if not isinstance(state, dict) or not state:
        raise SegattnError(f"checkpoint {path} holds no model weights (expected a 'model' or 'state_dict' mapping)")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        name = getattr(model, "config", {}).get("name", type(model).__name__)
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                         f"{tuple(own[k].shape)} in the model)")
        raise SegattnError(f"checkpoint {path} does not fit model {name!r} of its config: weights "
                           + ", ".join(parts) + "; pass the --config it was trained with")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise SegattnError(f"checkpoint {path}: cannot load its weights: {one_line(str(exc), 300)}") from None


def refuse_model_overrides(source: str, overrides: Sequence[str]) -> None:
    """A saved model folder fixes its architecture: a ``model.*`` override would be ignored silently."""
    keys = [item.split("=", 1)[0].strip() for item in overrides]
    model_keys = [k for k in keys if k == "model" or k.startswith("model.")]
    if model_keys:
        raise SegattnError(f"--set {', '.join(model_keys)}: {source} is a saved model whose architecture and weights "
                           "come from its config.json; --set changes only its data and eval settings here")


def run_evaluation(checkpoint: str, config: Optional[str] = None, overrides: Sequence[str] = (),
                   out: Optional[str] = None, overwrite: bool = False, device: Optional[str] = None,
                   show_progress: bool = True) -> Optional[Dict[str, Any]]:
    """Metrics dict (on rank 0; ``None`` on other ranks); also written to ``out`` as JSON if given.

    ``device`` (e.g. ``cpu``, ``cuda:1``) replaces the config's ``train.device``.
    """
    if device:
        same = [item for item in overrides if item.split("=", 1)[0].strip() == "train.device"]
        if same:  # the flag replaced the override silently
            raise SegattnError(f"--device {device} and --set {same[0]} set the same key train.device; give one of them")
        pick_device(device)  # the flag's value named in the message, not the config key it sets
    if out:
        check_writable_file(out, "--out", overwrite=overwrite)
    from segattn.models.weights import from_pretrained, is_pretrained_source, pretrained_run_config

    if is_pretrained_source(checkpoint):
        refuse_model_overrides(checkpoint, overrides)
    saved = from_pretrained(checkpoint) if is_pretrained_source(checkpoint) else None  # save_pretrained folder
    ckpt = {"config": pretrained_run_config(saved.pretrained_dir)} if saved is not None else read_checkpoint(checkpoint)
    if config is not None:
        data = load_config_dict(config)
    elif isinstance(ckpt.get("config"), dict) and (saved is None or ckpt["config"].get("data")):
        data = ckpt["config"]
    else:
        raise SegattnError(f"checkpoint {checkpoint} holds no config (not written by `segattn train`?); pass --config")
    overrides = list(overrides) + ([f"train.device={device}"] if device else [])
    merged = with_init(data, overrides) if config is not None else apply_overrides(data, overrides)
    cfg = config_from_dict(merged)
    dataset_named = isinstance(merged.get("data"), dict) and "dataset" in merged["data"]
    if cfg.data.val_split is None:
        raise SegattnError("config key data.val_split: got null, expected the split to score (e.g. --set "
                           "data.val_split=val)")
    pick_device(cfg.train.device)  # an unavailable device fails here, before the dataset is read
    info = init_distributed(cfg.train.device)
    try:
        val = build.build_dataset_split(cfg.data, cfg.data.val_split, train=False)
        k = int(val.num_classes)
        if saved is not None:
            if int(saved.num_classes) != k:
                chosen = (f"the dataset {cfg.data.dataset!r}" if dataset_named else
                          f"the default dataset {cfg.data.dataset!r} (no config names one)")
                raise SegattnError(f"{checkpoint} has {saved.num_classes} classes but {chosen} has {k}; pick the "
                                   "dataset it was trained on with --set data.dataset=NAME data.root=DIR or --config "
                                   "FILE")
            model = saved
        else:
            model = build.build_model(cfg.model, k)
            load_weights(model, ckpt, checkpoint)
        model.to(info.device).eval()
        e = cfg.eval
        n = len(val) if e.max_samples is None else min(len(val), int(e.max_samples))
        loader = DataLoader(val, batch_size=cfg.data.val_batch_size, num_workers=cfg.data.num_workers,
                            sampler=ShardSampler(n, info.world_size, info.rank))
        amp = build.amp_dtype(cfg.train.amp, cfg.train.amp_dtype, info.device, training=False)
        metrics = evaluate(model, loader, k, int(getattr(val, "ignore_index", 255)), list(val.classes), info.device,
                           e.mode, e.crop_size, e.stride, e.scales, e.flip, None, amp, show_progress=show_progress,
                           names=[str(f[0]) for f in val.files] if getattr(val, "files", None) else None)
    finally:
        cleanup(info)
    if not info.is_main:
        return None
    metrics = {**metrics, "checkpoint": os.path.abspath(checkpoint), "eval": vars(cfg.eval).copy(),
               "split": cfg.data.val_split, "dataset": cfg.data.dataset, "samples": n}
    if out:
        atomic_write_json(out, json_safe(metrics))
    return metrics
