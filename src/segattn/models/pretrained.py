"""Models built from a saved folder: ``from_pretrained``, ``weights_info`` / ``model_macs``.

This module sits above :mod:`segattn.models.factory` (it builds models); the folder format itself is
:mod:`segattn.models.folder`, which the model classes use to save themselves.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Union

import torch
from torch import nn

from segattn.checks import checked
from segattn.models.factory import create_model
from segattn.models.folder import (
    _tuplify,
    load_pretrained_state,
    pretrained_weights_path,
    read_pretrained_config,
)
from segattn.models.hub import resolve_pretrained


@dataclass
class WeightsInfo:
    """What a set of segmentation weights is: shown by ``segattn models --info NAME``.

    ``mean``/``std`` are in 0-255 pixel units (``None``: the model takes [0, 1] images);
    ``crop_size`` is the training crop (H, W); ``eval`` the evaluation settings (mode, scales, flip);
    ``miou`` a fraction in [0, 1] as the engine reports it;
    ``macs`` multiply-accumulates of one forward at ``macs_size``; ``file_size`` bytes of the weights.
    """

    model: str
    source: str = "random init"
    dataset: Optional[str] = None
    classes: List[str] = field(default_factory=list)
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    crop_size: Optional[List[int]] = None
    eval: Dict[str, Any] = field(default_factory=dict)
    miou: Optional[float] = None
    command: Optional[str] = None
    macs: Optional[int] = None
    macs_size: Optional[List[int]] = None
    file_size: Optional[int] = None
    kwargs: Dict[str, Any] = field(default_factory=dict)

    def lines(self) -> List[str]:
        """``key: value`` lines for a terminal."""
        out = []
        for key, value in asdict(self).items():
            if key == "classes" and value:
                value = f"{len(value)}: " + ", ".join(value)
            elif key == "macs" and value is not None:
                value = f"{value / 1e9:.2f} G at {self.macs_size[0]}x{self.macs_size[1]}" if self.macs_size else value
            elif key == "file_size" and value is not None:
                value = f"{value / 2 ** 20:.1f} MiB"
            elif key == "miou" and value is not None:
                value = f"{100 * value:.2f} % (val)"
            if key != "macs_size" and value not in (None, [], {}):
                out.append(f"{key:<10} {value}")
        return out


@checked()
def from_pretrained(source: Union[str, os.PathLike[str]], map_location: Any = "cpu", strict: bool = True,
                    revision: Optional[str] = None, cache_dir: Optional[str] = None,
                    token: Optional[str] = None) -> nn.Module:
    """Rebuild a model from a :func:`save_pretrained` folder or a Hub repo id; returned in eval mode.

    The model's ``config`` is the ``create_model`` call; ``model.pretrained_config`` holds the whole
    ``config.json`` (class names, palette, normalisation, eval settings, metrics).
    """
    directory = resolve_pretrained(source, revision, cache_dir, token)
    config = read_pretrained_config(directory)
    kwargs = {k: _tuplify(v) for k, v in (config.get("kwargs") or {}).items()}
    model = create_model(config["name"], int(config["num_classes"]), **kwargs)
    model.load_state_dict(load_pretrained_state(directory, config, map_location), strict=strict)
    model.pretrained_config = config
    model.pretrained_dir = os.path.abspath(directory)
    return model.eval()


def weights_info(source: Union[str, os.PathLike[str]], macs_size: Optional[List[int]] = None) -> WeightsInfo:
    """:class:`WeightsInfo` of a saved folder (or Hub repo id); MACs at ``macs_size`` (default: the
    training crop, else 512x512)."""
    directory = resolve_pretrained(source)
    config = read_pretrained_config(directory)
    weights = pretrained_weights_path(directory, config)
    size = list(macs_size or config.get("crop_size") or [512, 512])
    k = int(config["num_classes"])
    info = WeightsInfo(
        model=config["name"], source=os.fspath(source), dataset=config.get("dataset"),
        classes=[config.get("id2label", {}).get(str(i), str(i)) for i in range(k)],
        mean=config.get("mean"), std=config.get("std"), crop_size=config.get("crop_size"),
        eval=config.get("eval") or {}, miou=(config.get("metrics") or {}).get("mIoU"),
        command=config.get("command"), file_size=os.path.getsize(weights) if os.path.isfile(weights) else None,
        kwargs=config.get("kwargs") or {},
    )
    info.macs, info.macs_size = model_macs(config["name"], k, size, **{kk: _tuplify(v) for kk, v in info.kwargs.items()}), size
    return info


def model_macs(name: str, num_classes: int, size: List[int], **kwargs: Any) -> int:
    """Multiply-accumulates of one eval forward of a batch-1 image of ``size`` (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(name, num_classes, **kwargs).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, int(size[0]), int(size[1])))
    return int(counter.get_total_flops() // 2)
