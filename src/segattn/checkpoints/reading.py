"""Reading weight files: PyTorch pickles (plain data only), safetensors, explicit URLs, mappings.

Nothing is downloaded implicitly: a source is a local path (``.pth``/``.pt``/``.bin``, or
``.safetensors`` when the ``safetensors`` package is installed), an ``http(s)://`` URL that the caller
passed on purpose (fetched with ``torch.hub.load_state_dict_from_url`` into torch's hub cache), or an
in-memory state dict.
"""

from __future__ import annotations

import os
import re
from typing import Dict, Mapping, Union

import torch
from torch import Tensor

StateDict = Dict[str, Tensor]
Source = Union[str, "os.PathLike[str]", Mapping[str, Tensor]]

_WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module")


def _is_url(source: object) -> bool:
    return isinstance(source, str) and re.match(r"^(https?|file)://", source) is not None


def read_checkpoint(source: Source) -> StateDict:
    """Load a state dict from a path, an explicit URL or a mapping, unwrapping ``{"state_dict": ...}``."""
    if isinstance(source, Mapping):
        obj: object = dict(source)
    elif _is_url(source):
        obj = torch.hub.load_state_dict_from_url(str(source), map_location="cpu", weights_only=True, progress=False)
    else:
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint file not found: {path!r} (weights are never downloaded implicitly)")
        obj = _load_file(path)
    return _unwrap(obj)


def _load_file(path: str) -> object:
    if path.endswith(".safetensors"):
        return load_safetensors(path)
    from segattn.io import safe_torch_load

    return safe_torch_load(path, map_location="cpu", what="weights file")


def load_safetensors(path: str, device: str = "cpu") -> StateDict:
    """The tensors of a ``.safetensors`` file; a truncated or damaged file is a ``ValueError`` naming it."""
    try:
        from safetensors.torch import load_file
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {path!r} needs the 'safetensors' package (pip install 'segattn[hub]')") from err
    try:
        return load_file(path, device=device)
    except Exception as exc:  # SafetensorError: the header or the data do not match the file
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"weights file {path!r} is not a readable safetensors file (truncated or damaged): "
                         f"{reason}") from None


def _unwrap(obj: object) -> StateDict:
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise TypeError(f"checkpoint is not a state dict (got {type(obj).__name__})")
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}


__all__ = ["Source", "StateDict", "load_safetensors", "read_checkpoint"]
