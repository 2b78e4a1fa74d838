"""Reading an mmseg checkpoint (0.x and 1.x) and its config, as data only.

An mmseg checkpoint is a pickle ``{"meta": {...}, "state_dict": {...}, ...}``. It is read with
``torch.load(weights_only=True)`` only (:func:`read_mmseg_checkpoint`): a file holding objects whose
loading could run code is refused. mmengine (mmseg 1.x) stores the merged config text in
``meta["cfg"]`` and the classes in ``meta["dataset_meta"]``; mmcv 1.x (mmseg 0.x) in
``meta["config"]``, ``meta["CLASSES"]`` and ``meta["PALETTE"]`` (a numpy array when the run had custom
classes and no palette: read as data, never through numpy's unpickling). The config text is read
with :func:`segattn.convert.mmconfig.parse_config` restricted to :data:`CONFIG_KEYS`, so lines the
converter does not read (``gpu_ids = range(0, 4)``) are never evaluated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

from torch import Tensor

from segattn.convert.mmconfig import MERGED_HOWTO, ConfigError, parse_config
from segattn.errors import SegattnError

StateDict = Dict[str, Tensor]
PathLike = Union[str, "os.PathLike[str]"]

#: the parts of an mmseg config the converter reads (everything else is left unevaluated)
CONFIG_KEYS = ("model", "test_cfg", "data_preprocessor", "img_norm_cfg", "crop_size", "dataset_type",
               "data.test.type", "data.test.pipeline", "test_dataloader.dataset.type", "norm_cfg")


class ConversionError(SegattnError):
    """A checkpoint or config this converter cannot turn into a segattn model (the message says why)."""


def require(cond: bool, what: str) -> None:
    """Raise :class:`ConversionError` with ``what`` unless ``cond``."""
    if not cond:
        raise ConversionError(what)


@dataclass
class MmsegCheckpoint:
    """What an mmseg checkpoint holds that the converter reads: tensors, config text, dataset meta,
    and notes on what was dropped while reading (printed by the CLI, warned by the API)."""

    state_dict: StateDict
    config_text: Optional[str] = None
    config_source: str = "meta['cfg']"
    dataset_meta: Dict[str, Any] = field(default_factory=dict)
    path: Optional[str] = None
    notes: List[str] = field(default_factory=list)


class NumpyArray:
    """What :func:`read_mmseg_checkpoint` puts where a pickle rebuilds a numpy array: the recorded
    shape, dtype and bytes (never numpy's own reconstruction); :meth:`to_list` decodes plain numbers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_list(self) -> Optional[list]:
        """The array as nested lists, or ``None`` when it is not a plain numeric array."""
        import numpy as np

        try:
            _, shape, dtype, fortran, raw = self.state
            code, order = dtype.args[0], (dtype.state[1] if dtype.state else "|")
            if not isinstance(raw, bytes) or str(code)[:1] not in "iufb" or fortran:
                return None
            arr = np.frombuffer(raw, dtype=np.dtype(str(code)).newbyteorder(order if order in "<>" else "="))
            return arr.reshape(tuple(shape)).tolist()
        except Exception:  # noqa: BLE001 - anything unexpected: not plain data
            return None


class NumpyDtype(NumpyArray):
    """The dtype part of a pickled numpy array (its constructor arguments and state, recorded only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


#: globals the converter replaces instead of refusing the file: numpy arrays (recorded as data by
#: :class:`NumpyArray`) and the training state of mmengine runs (``message_hub``: ``HistoryBuffer``),
#: which becomes an inert :class:`segattn.io.Skipped`; none of them is imported or called
STAND_INS: Dict[str, Any] = {
    "numpy._core.multiarray._reconstruct": NumpyArray, "numpy.core.multiarray._reconstruct": NumpyArray,
    "numpy.ndarray": NumpyArray, "numpy.dtype": NumpyDtype,
}
TRAINING_STATE_GLOBALS = (
    "mmengine.logging.history_buffer.HistoryBuffer",
    "builtins.getattr",  # numpy 2 pickles dtypes through getattr(numpy.dtypes, ...): replaced, never called
)


def _holds_stand_in(node: Any) -> bool:
    from segattn.io import Skipped

    if isinstance(node, (Skipped, NumpyArray)):
        return True
    if isinstance(node, Mapping):
        return any(_holds_stand_in(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(_holds_stand_in(v) for v in node)
    return False


def _dataset_meta(meta: Mapping[str, Any], name: str, notes: List[str]) -> Dict[str, Any]:
    """Classes and palette: mmseg 1.x ``meta["dataset_meta"]``, 0.x ``meta["CLASSES"]`` / ``["PALETTE"]``."""
    out = dict(meta.get("dataset_meta") or {})
    if not out and meta.get("CLASSES") is not None:
        out = {"classes": meta["CLASSES"], "palette": meta.get("PALETTE")}
    for key in ("classes", "palette"):
        value = out.get(key)
        if isinstance(value, NumpyArray):
            value = value.to_list()
            if value is None:
                notes.append(f"{name}: meta's {key} is a numpy array that is not plain numbers; dropped "
                             f"({'numbered classes' if key == 'classes' else 'the default palette'} instead)")
        out[key] = list(value) if isinstance(value, (list, tuple)) else None
    require(not _holds_stand_in(out), f"{name}: meta's classes / palette hold objects other than plain data "
                                      "(expected names and RGB triples)")
    return out if out.get("classes") is not None else {}


def read_mmseg_checkpoint(path: PathLike) -> MmsegCheckpoint:
    """Load ``path`` with ``weights_only=True`` and pick out the state dict, config text and dataset meta.

    A file whose pickle holds objects beyond tensors and plain data (which could run code when
    loaded) is refused by :func:`segattn.io.safe_torch_load` with a message naming the first one.
    Numpy arrays and the training state of mmengine runs are replaced by stand-ins
    (:data:`STAND_INS`, :data:`TRAINING_STATE_GLOBALS`), never imported or called; only the palette
    and classes are read from them, and none may appear in ``state_dict`` or the config.
    """
    from segattn.io import safe_torch_load

    stand_ins: Dict[str, Any] = dict(STAND_INS)
    stand_ins.update({g: None for g in TRAINING_STATE_GLOBALS})
    obj = safe_torch_load(path, what="mmseg checkpoint", skip=stand_ins)
    name = os.fspath(path)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("state_dict"), Mapping):
        found = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise ConversionError(f"{name}: not an mmseg checkpoint (expected a dict with 'state_dict' and 'meta', "
                              f"found {found})")
    require(not _holds_stand_in(obj["state_dict"]),
            f"{name}: state_dict holds objects other than tensors (numpy arrays or training state); "
            "expected tensors only")
    sd = {k: v for k, v in obj["state_dict"].items() if isinstance(v, Tensor)}
    meta = obj.get("meta") if isinstance(obj.get("meta"), Mapping) else {}
    text, source = None, "meta['cfg']"
    for key in ("cfg", "config"):
        if isinstance(meta.get(key), str) and meta[key].strip():
            text, source = meta[key], f"{name}: meta[{key!r}]"
            break
    notes: List[str] = []
    dataset_meta = _dataset_meta(meta, name, notes)
    return MmsegCheckpoint(sd, text, source, dataset_meta, name, notes)


def read_config(config: Union[None, PathLike, Mapping[str, Any]], ckpt: MmsegCheckpoint) -> Dict[str, Any]:
    """The parsed config: ``config`` (a file or a parsed dict) when given, else the checkpoint's own text."""
    if isinstance(config, Mapping):
        return dict(config)
    if config is not None:
        path = os.fspath(config)
        if os.path.isdir(path):
            raise ConfigError(f"config {path!r} is a folder; {MERGED_HOWTO}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path!r} does not exist")
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError:
            raise ConfigError(f"config {path!r} is not a UTF-8 text file; {MERGED_HOWTO}") from None
        return parse_config(text, source=path, keys=CONFIG_KEYS)
    if ckpt.config_text is None:
        raise ConfigError(f"{ckpt.path}: the checkpoint carries no config (meta['cfg'] / meta['config']); "
                          f"{MERGED_HOWTO}; or convert the zoo entry by NAME, whose manifest carries its config")
    return parse_config(ckpt.config_text, source=ckpt.config_source, keys=CONFIG_KEYS)


__all__ = ["CONFIG_KEYS", "ConversionError", "MmsegCheckpoint", "NumpyArray", "read_config", "read_mmseg_checkpoint",
           "require"]
