"""Atomic checkpoints and the RNG snapshot that makes resume exact.

A training checkpoint is one ``torch.save`` file holding: ``model`` (state dict of the unwrapped
model, buffers such as EMA bases and BN statistics included), ``optimizer``, ``scheduler``,
``scaler``, ``iteration`` (optimiser steps done), ``rng`` (python, numpy, torch CPU and every CUDA
device), ``config`` (the run config), ``model_config`` (``model.config`` when the model has one),
``best`` (best validation metric so far) and ``classes``. Files are written to a temporary name in the
same folder and renamed over the target, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os
import random
from typing import Any, Dict, Optional

import numpy as np
import torch

from segattn.io import atomic_torch_save


def rng_state() -> Dict[str, Any]:
    """Snapshot of every global random stream the training loop touches."""
    state: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore a :func:`rng_state` snapshot."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    atomic_torch_save(path, obj)


def load_checkpoint(path: str, map_location: Optional[str] = "cpu") -> Dict[str, Any]:
    """Read a checkpoint written by :func:`atomic_save` (RNG states need ``weights_only=False``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    return torch.load(path, map_location=map_location, weights_only=False)


def model_state(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """The model state dict of a training checkpoint, a bare state dict, or a ``{"state_dict": ...}``."""
    for key in ("model", "state_dict"):
        if key in ckpt and isinstance(ckpt[key], dict):
            return ckpt[key]
    return ckpt
