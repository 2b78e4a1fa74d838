"""The mmseg 0.30 fixtures (``scripts/make_mmseg030_fixtures.py``): checkpoints as mmcv 1.7 writes them.

Each ``NAME.json`` holds the ``meta`` of a checkpoint that mmcv 1.7's ``IterBasedRunner`` /
``CheckpointHook`` wrote after an mmseg 0.30 ``tools/train.py`` run on 4 GPUs (the config text with
``gpu_ids = range(0, 4)``, ``CLASSES``, ``PALETTE`` as mmseg's numpy array, ``env_info``, ``seed``,
``exp_name``, ``mmseg_version``, ``mmcv_version``, ``time``, ``iter``, ``epoch``, ``hook_msgs``), the
optimizer's param groups and the state-dict keys; :func:`write_checkpoint` rebuilds the same file
(weights and momentum buffers from ``mmseg_synth``'s hash). The fixture script checked that the
rebuilt file loads equal to the one mmcv wrote. ``NAME.npz``: mmseg 0.30's logits.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from tests.convert.mmseg_synth import synth_state_dict, synth_tensor

FIXTURES = Path(__file__).parent / "fixtures" / "mmseg030"
NAMES: List[str] = sorted(p.stem for p in FIXTURES.glob("*.json"))


def record(name: str) -> Dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def expected(name: str) -> Dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def decode(node: Any) -> Any:
    """JSON -> the Python values mmcv pickled (tuples and numpy arrays are tagged in the JSON)."""
    if isinstance(node, dict):
        if "__tuple__" in node:
            return tuple(decode(v) for v in node["__tuple__"])
        if "__ndarray__" in node:
            return np.array(node["__ndarray__"], dtype=node["dtype"])
        return {k: decode(v) for k, v in node.items()}
    if isinstance(node, list):
        return [decode(v) for v in node]
    return node


def state_dict(rec: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The state dict as ``torch.nn.Module.state_dict()`` returns it: an OrderedDict with ``_metadata``."""
    sd = OrderedDict(synth_state_dict(rec["keys"]))
    for key, source in rec.get("tied", {}).items():
        sd[key] = sd[source].clone()
    sd._metadata = OrderedDict((k, dict(v)) for k, v in rec.get("metadata", {}).items())  # type: ignore[attr-defined]
    return sd


def optimizer_state(rec: Dict[str, Any]) -> Dict[str, Any]:
    """torch SGD's ``state_dict()`` as mmcv saved it (momentum buffers from the hash)."""
    opt = rec["optimizer"]
    state = {int(i): {"momentum_buffer": synth_tensor(f"momentum:{i}", shape)} for i, shape in opt["state"].items()}
    return {"state": state, "param_groups": decode(opt["param_groups"])}


def write_checkpoint(rec: Dict[str, Any], path: Path, *, optimizer: bool = True, legacy: bool = False,
                     **meta_changes: Any) -> Path:
    """The checkpoint mmcv 1.7 wrote (``optimizer=False``: after mmseg's ``publish_model.py``;
    ``legacy=True``: the pre-zip serialisation of torch < 1.6, files published before 2021)."""
    meta = decode(rec["meta"])
    meta.update(meta_changes)
    ckpt: Dict[str, Any] = {"meta": meta, "state_dict": state_dict(rec)}
    if optimizer:
        ckpt["optimizer"] = optimizer_state(rec)
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return path
