"""Atomic checkpoints that load without running code, and the RNG snapshot that makes resume exact.

A training checkpoint is one ``torch.save`` file holding: ``model`` (state dict of the unwrapped
model, buffers such as EMA bases and BN statistics included), ``optimizer``, ``scheduler``,
``scaler``, ``iteration`` (optimiser steps done), ``rng`` (python, numpy, torch CPU and every CUDA
device), ``config`` (the run config as a plain dict), ``model_config`` (``model.config`` when the
model has one), ``best`` (best validation metric so far) and ``meta`` (classes, palette, ...).

Everything in it is plain data (tensors, numbers, strings, lists, dicts): the RNG states are stored
as lists and tensors, so the file loads with ``torch.load(..., weights_only=True)``, the only way
segattn reads a checkpoint. A file holding any other Python object is refused (unpickling it could
run code). Files are written to a temporary name in the same folder and renamed over the target, so
a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any, Dict, Optional

import numpy as np
import torch

from segattn.io import atomic_torch_save, safe_torch_load

_PLAIN = (type(None), bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.Size, torch.device)


def rng_state() -> Dict[str, Any]:
    """Snapshot of every global random stream the training loop touches, as plain data and tensors."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "python": [int(version), [int(x) for x in internal], gauss],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore a :func:`rng_state` snapshot."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    npy = state["numpy"]
    keys = torch.as_tensor(npy["keys"]).cpu().numpy().astype(np.uint32)
    np.random.set_state((npy["name"], keys, int(npy["pos"]), int(npy["has_gauss"]), float(npy["cached_gaussian"])))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def to_plain(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` with numpy scalars/arrays turned into Python numbers/tensors; ``TypeError`` naming the
    place of anything that ``torch.load(weights_only=True)`` could not read back."""
    if isinstance(obj, np.generic):  # before the plain types: np.float64 is a float subclass
        return obj.item()
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; checkpoint keys must be str or int")
        values = {k: to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
        if type(obj) in (dict, OrderedDict) and all(values[k] is v for k, v in obj.items()):
            return obj  # unchanged: keep the object (a state dict's OrderedDict and its _metadata)
        return values
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if type(obj) in (list, tuple) and all(a is b for a, b in zip(items, obj)):
            return obj
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; a checkpoint holds only tensors "
                    "and plain data (numbers, strings, lists, dicts), so that it loads with weights_only=True")


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` of :func:`to_plain` ``(obj)`` to a temporary file beside ``path``, fsync, then rename."""
    atomic_torch_save(path, to_plain(obj))


def load_checkpoint(path: str, map_location: Optional[str] = "cpu") -> Dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; anything but plain data and tensors is refused
    (``ValueError``), as are files that are not PyTorch files or hold no mapping."""
    obj = safe_torch_load(path, map_location=map_location, what="checkpoint")
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path!r} holds a {type(obj).__name__}, expected a mapping "
                         "(a segattn training checkpoint or a state dict)")
    return obj



# what `segattn train` stores and a resumed run restores, with the type each must have
RESUME_KEYS = {"model": dict, "optimizer": dict, "scheduler": dict, "scaler": dict, "iteration": int, "rng": dict}
_KINDS = {dict: "a mapping", int: "an integer"}


def check_resumable(ckpt: Dict[str, Any], path: str) -> None:
    """``ValueError`` naming ``path`` and the keys at fault when ``ckpt`` cannot continue a training run."""
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    wrong = [f"{k!r} is a {type(ckpt[k]).__name__}, expected {_KINDS[t]}" for k, t in RESUME_KEYS.items()
             if k in ckpt and (not isinstance(ckpt[k], t) or isinstance(ckpt[k], bool))]
    if not missing and not wrong and ckpt["iteration"] < 0:
        wrong.append(f"'iteration' is {ckpt['iteration']}, expected >= 0")
    if missing or wrong:
        found = (f"it lacks {', '.join(repr(k) for k in missing)}" if missing else "") + (
            "; " if missing and wrong else "") + "; ".join(wrong)
        raise ValueError(f"checkpoint {path} cannot be resumed: {found} (a checkpoint written by `segattn train` "
                         f"holds {', '.join(RESUME_KEYS)}); to start a new run from its weights, pass "
                         f"--set model.pretrained={path} without --resume")

def model_state(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """The model state dict of a training checkpoint, a bare state dict, or a ``{"state_dict": ...}``."""
    for key in ("model", "state_dict"):
        if key in ckpt and isinstance(ckpt[key], dict):
            return ckpt[key]
    return ckpt
