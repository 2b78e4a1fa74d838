"""The Hub-format model folder, written and read: ``save_pretrained``, ``config.json``, the weights file.

Building a model from a folder (``from_pretrained``) is :mod:`segattn.models.pretrained`; Hub repo ids
(download, upload) are :mod:`segattn.models.hub`; backbone checkpoint reading and key remapping live
in :mod:`segattn.checkpoints`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from segattn.checkpoints.reading import load_safetensors

StateDict = Dict[str, Tensor]

# ----- Hub-format model folders: save_pretrained / from_pretrained / push_to_hub -------------------
#
# A folder the Hugging Face ecosystem understands (and a ``segattn predict`` / ``eval`` input):
#
#   config.json        model name and keywords, class names (id2label), palette, normalisation
#                      mean/std, training crop, eval settings, dataset, metrics, weights file
#   model.safetensors  the state dict (``model.pt`` through torch.save when safetensors is absent)
#   README.md          model card: dataset, metrics, the training command, how to load
#   training_config.json   the full run config, when the model comes from `segattn train`
#
# The folder is written to a temporary sibling and renamed into place, so a reader sees the old
# folder or the complete new one, never a mixture.

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "model.pt"
CARD_FILE = "README.md"
TRAINING_CONFIG_FILE = "training_config.json"
HUB_FORMAT_VERSION = 2
_OWN_FILES = (CONFIG_FILE, SAFETENSORS_FILE, TORCH_FILE, CARD_FILE, TRAINING_CONFIG_FILE)
_CARD_KEYS = ("classes", "palette", "mean", "std", "crop_size", "eval", "dataset", "metrics", "command",
              "run_config", "source")



def safetensors_available() -> bool:
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        return False
    return True


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Tensor):
        return value.tolist()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def _tuplify(value: Any) -> Any:
    """JSON turns tuples into lists; constructors with tuple defaults get tuples back."""
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuplify(v) for k, v in value.items()}
    return value


def _check_normalisation(mean: Optional[List[float]], std: Optional[List[float]]) -> None:
    """``ValueError`` unless mean/std are both given or both absent, equally long, finite, std > 0."""
    if (mean is None) != (std is None):
        raise ValueError(f"give both mean and std (0-255 pixel units) or neither, got mean={mean!r}, std={std!r}")
    if mean is None:
        return
    values = [float(v) for v in list(mean) + list(std)]
    if len(mean) != len(std) or not all(v == v and abs(v) != float("inf") for v in values):
        raise ValueError(f"mean and std must be finite and of equal length, got mean={mean!r}, std={std!r}")
    if min(float(v) for v in std) <= 0:
        raise ValueError(f"every std must be > 0 (images are divided by it), got std={list(std)!r}")


def hub_config(model: nn.Module, *, classes: Optional[List[str]] = None, palette: Optional[List[Any]] = None,
               mean: Optional[List[float]] = None, std: Optional[List[float]] = None,
               crop_size: Optional[List[int]] = None, eval: Optional[Dict[str, Any]] = None,
               dataset: Optional[str] = None, metrics: Optional[Dict[str, Any]] = None,
               command: Optional[str] = None, source: Optional[str] = None,
               weights_file: str = SAFETENSORS_FILE) -> Dict[str, Any]:
    """The ``config.json`` dict of a Hub-format folder for ``model`` (built with ``create_model``)."""
    mc = dict(getattr(model, "config", {}) or {})
    if "name" not in mc or "num_classes" not in mc:
        raise RuntimeError("model has no config (build it with segattn.create_model to save it)")
    k = int(mc["num_classes"])
    _check_normalisation(mean, std)
    classes = [str(c) for c in (classes or [str(i) for i in range(k)])]
    if len(classes) != k:
        raise ValueError(f"{len(classes)} class names given for a model with {k} classes")
    kwargs = {key: v for key, v in mc.items() if key not in ("name", "num_classes", "pretrained")}
    scalar_metrics = {key: float(v) for key, v in (metrics or {}).items() if isinstance(v, (int, float))}
    return _jsonable({
        "model_type": "segattn",
        "architectures": [type(model).__name__],
        "format_version": HUB_FORMAT_VERSION,
        "name": mc["name"],
        "num_classes": k,
        "kwargs": kwargs,
        "id2label": {str(i): c for i, c in enumerate(classes)},
        "label2id": {c: i for i, c in enumerate(classes)},
        "palette": palette,
        "mean": mean,
        "std": std,
        "crop_size": crop_size,
        "eval": eval or {},
        "dataset": dataset,
        "metrics": scalar_metrics,
        "command": command,
        "source": source,
        "weights": weights_file,
    })


def model_card(config: Dict[str, Any], metrics: Optional[Dict[str, Any]] = None) -> str:
    """README.md for the folder: Hub metadata header, what the model is, its numbers, how to use it."""
    name, k = config["name"], config["num_classes"]
    dataset = config.get("dataset")
    m = dict(config.get("metrics") or {})
    header = ["---", "library_name: segattn", "pipeline_tag: image-segmentation",
              "tags: [semantic-segmentation, segattn, " + name + "]"]
    if dataset:
        header.append(f"datasets: [{dataset}]")
    header.append("---")
    kw = config.get("kwargs") or {}
    lines = [*header, "", f"# {name} ({kw.get('backbone', 'resnet50')}) for {k}-class segmentation"
             + (f" on {dataset}" if dataset else ""), "",
             f"A `segattn` model: `segattn.create_model({name!r}, {k}, **kwargs)` with the keywords in "
             "`config.json`.", ""]
    lines += ["| item | value |", "|---|---|"]
    lines.append(f"| dataset | {dataset or 'not recorded'} |")
    if config.get("crop_size"):
        lines.append(f"| training crop | {config['crop_size'][0]}x{config['crop_size'][1]} |")
    if config.get("mean") is not None:
        lines.append(f"| input normalisation | mean {config['mean']}, std {config['std']} (0-255 pixels) |")
    if config.get("eval"):
        ev = config["eval"]
        lines.append(f"| evaluation | mode {ev.get('mode')}, scales {ev.get('scales')}, flip {ev.get('flip')} |")
    for key in ("mIoU", "aAcc", "mAcc"):
        if isinstance(m.get(key), (int, float)):
            lines.append(f"| {key} (val) | {100 * m[key]:.2f} |")
    if "iteration" in m:
        lines.append(f"| training iterations | {int(m['iteration'])} |")
    classes = [config["id2label"][str(i)] for i in range(k)]
    per_class = (metrics or {}).get("IoU")
    if isinstance(per_class, Mapping) and per_class:
        lines += ["", "Per-class IoU (val, %):", "", "| class | IoU |", "|---|---|"]
        lines += [f"| {c} | {100 * float(v):.2f} |" for c, v in per_class.items()]
    lines += ["", "## Use", "", "```python", "import segattn, torch",
              "model = segattn.from_pretrained(\"PATH_OR_REPO\")      # eval mode",
              "# images: (B, 3, H, W) float; (pixels - mean) / std with config.json's mean/std (0-255 pixels)",
              "labels = model.predict(images)                         # (B, H, W) class ids", "```", "",
              "```bash", "segattn predict images/ --checkpoint PATH_OR_FOLDER --out masks/", "```", ""]
    if config.get("command"):
        lines += ["## Training", "", "```bash", str(config["command"]), "```", ""]
    if config.get("source"):
        lines += [f"Weights from `{config['source']}`.", ""]
    lines += ["Classes: " + ", ".join(classes), ""]
    return "\n".join(lines)


def _state_for_saving(model: nn.Module) -> StateDict:
    # contiguous, unshared copies: safetensors refuses tensors that share storage
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _write_weights(state: StateDict, path: str) -> None:
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, path, metadata={"format": "pt"})
    else:
        torch.save(state, path)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_pretrained(model: nn.Module, directory: Union[str, os.PathLike[str]], *, overwrite: bool = False,
                    safe_serialization: Optional[bool] = None, metrics: Optional[Dict[str, Any]] = None,
                    run_config: Optional[Dict[str, Any]] = None, **card: Any) -> str:
    """Write a Hub-format folder for ``model`` (see above) as one unit; returns the folder path.

    Args:
        overwrite: replace an existing segattn folder at ``directory`` (refused otherwise); a folder
            holding anything else is never replaced.
        safe_serialization: ``model.safetensors`` (default when the package is installed) or ``model.pt``.
        metrics: evaluation metrics (scalars go to ``config.json``, per-class IoU to the card).
        run_config: the training run's config (written as ``training_config.json``).
        **card: ``classes``, ``palette``, ``mean``, ``std``, ``crop_size``, ``eval``, ``dataset``,
            ``command``, ``source`` (see :func:`hub_config`).
    """
    unknown = set(card) - set(_CARD_KEYS)
    if unknown:
        raise TypeError(f"save_pretrained got unknown keywords {sorted(unknown)}; accepted: {sorted(_CARD_KEYS)}")
    if safe_serialization is None:
        safe_serialization = safetensors_available()
    elif safe_serialization and not safetensors_available():
        raise ImportError("safe_serialization=True needs the 'safetensors' package (pip install 'segattn[hub]')")
    weights_file = SAFETENSORS_FILE if safe_serialization else TORCH_FILE
    config = hub_config(model, weights_file=weights_file, metrics=metrics, **card)
    target = os.path.abspath(os.fspath(directory))
    if os.path.isfile(target):
        raise FileExistsError(f"{target} is a file, expected a folder for save_pretrained")
    if os.path.isdir(target) and os.listdir(target):
        entries = set(os.listdir(target))
        if not entries <= set(_OWN_FILES):
            raise FileExistsError(f"{target} is a non-empty folder with other files "
                                  f"({sorted(entries - set(_OWN_FILES))[:5]}); choose a new folder")
        if not overwrite:
            raise FileExistsError(f"{target} already holds a saved model; pass overwrite=True to replace it")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=parent)
    try:
        _write_weights(_state_for_saving(model), os.path.join(tmp, weights_file))
        with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as f:
            f.write(json.dumps(config, indent=2) + "\n")
        with open(os.path.join(tmp, CARD_FILE), "w", encoding="utf-8") as f:
            f.write(model_card(config, metrics))
        if run_config is not None:
            with open(os.path.join(tmp, TRAINING_CONFIG_FILE), "w", encoding="utf-8") as f:
                f.write(json.dumps(_jsonable(run_config), indent=2) + "\n")
        for name in os.listdir(tmp):
            with open(os.path.join(tmp, name), "rb") as f:
                os.fsync(f.fileno())
        from segattn.io import _umask

        os.chmod(tmp, 0o777 & ~_umask())
        _swap_in(tmp, target)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _swap_in(tmp: str, target: str) -> None:
    """Rename ``tmp`` to ``target``; an existing ``target`` is moved aside first and removed after."""
    if not os.path.exists(target):
        os.rename(tmp, target)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", suffix=".old", dir=os.path.dirname(target))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_pretrained_config(directory: Union[str, os.PathLike[str]]) -> Dict[str, Any]:
    """``config.json`` of a saved folder, in the current layout (format 1 folders are converted)."""
    path = os.path.join(os.fspath(directory), CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {CONFIG_FILE} in {os.fspath(directory)!r} (written by model.save_pretrained)")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: line {err.lineno} column {err.colno}: {err.msg}") from None
    if not isinstance(config, dict) or "name" not in config or "num_classes" not in config:
        raise ValueError(f"{path} is not a segattn model config (needs 'name' and 'num_classes')")
    if int(config.get("format_version", 1)) < 2:  # format 1: flat create_model keywords, model.pt
        kwargs = {k: v for k, v in config.items() if k not in ("name", "num_classes", "format_version")}
        k = int(config["num_classes"])
        config = {"name": config["name"], "num_classes": k, "kwargs": kwargs, "weights": TORCH_FILE,
                  "id2label": {str(i): str(i) for i in range(k)}, "format_version": 1}
    return config


def pretrained_weights_path(directory: Union[str, os.PathLike[str]], config: Dict[str, Any]) -> str:
    """The weights file a folder's ``config.json`` names (key ``weights``), inside that folder.

    A downloaded folder only ever reads its own files: a name with a folder part (``../other/x``),
    an absolute path or anything but a plain file name is a ``ValueError`` naming the key and value.
    """
    directory = os.fspath(directory)
    name = config.get("weights") or SAFETENSORS_FILE
    if (not isinstance(name, str) or name in (".", "..") or os.path.basename(name) != name or "/" in name
            or "\\" in name or os.path.isabs(name)):
        raise ValueError(f"{os.path.join(directory, CONFIG_FILE)}: 'weights' must be a file name inside the folder "
                         f"(e.g. {SAFETENSORS_FILE!r}), got {name!r}; a model folder only reads its own files")
    return os.path.join(directory, name)


def load_pretrained_state(directory: Union[str, os.PathLike[str]], config: Dict[str, Any],
                          map_location: Any = "cpu") -> StateDict:
    directory = os.fspath(directory)
    path = pretrained_weights_path(directory, config)
    if not os.path.isfile(path):
        others = [n for n in (SAFETENSORS_FILE, TORCH_FILE) if os.path.isfile(os.path.join(directory, n))]
        if not others:
            raise FileNotFoundError(f"no weights in {directory!r} (expected {os.path.basename(path)})")
        path = os.path.join(directory, others[0])
    if path.endswith(".safetensors"):
        if not safetensors_available():
            raise ImportError(f"{path} needs the 'safetensors' package (pip install 'segattn[hub]')")
        return load_safetensors(path, str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu")
    from segattn.io import safe_torch_load

    state = safe_torch_load(path, map_location=map_location, what="weights file")
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict")
    return dict(state)


def pretrained_meta(model: nn.Module) -> Dict[str, Any]:
    """``num_classes``, ``classes``, ``palette`` and ``ignore_index`` of a :func:`from_pretrained` model."""
    config = getattr(model, "pretrained_config", {}) or {}
    k = int(getattr(model, "num_classes", config.get("num_classes", 0)))
    labels = config.get("id2label") or {}
    return {"num_classes": k, "classes": [str(labels.get(str(i), i)) for i in range(k)],
            "palette": config.get("palette"), "ignore_index": 255}


def pretrained_run_config(directory: Union[str, os.PathLike[str]]) -> Dict[str, Any]:
    """A run config (as `segattn train` writes) for a saved folder: ``training_config.json`` when
    present, else one built from ``config.json`` (normalisation, the dataset when it is one of
    segattn's readers, eval settings)."""
    directory = os.fspath(directory)
    path = os.path.join(directory, TRAINING_CONFIG_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    config = read_pretrained_config(directory)
    data: Dict[str, Any] = {}
    if config.get("mean") is not None and config.get("std") is not None:
        data.update(transforms=True, mean=config["mean"], std=config["std"])
    elif config.get("format_version", 1) >= 2:
        data.update(transforms=False)
    import segattn.data.datasets  # noqa: F401  (registers the readers)
    from segattn.registry import DATASETS

    if config.get("dataset") in DATASETS:  # e.g. a converted mmseg Cityscapes model: its dataset's reader
        data["dataset"] = config["dataset"]
    run: Dict[str, Any] = {"data": data} if data else {}
    ev = {k: v for k, v in (config.get("eval") or {}).items() if v is not None}
    if ev:
        run["eval"] = ev
    return run
