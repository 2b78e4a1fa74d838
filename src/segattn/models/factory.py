"""``create_model`` / ``list_models`` and the shared builder every registered model uses."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

from torch import nn

from segattn.models.backbones import create_backbone
from segattn.models.heads import aux_head
from segattn.models.segmentor import SegmentationModel
from segattn.models.transfer import init_from_folder
from segattn.registry import MODELS

HeadFactory = Callable[[List[int], int, int], nn.Module]


def build_segmentor(
    make_head: HeadFactory,
    num_classes: int,
    *,
    backbone: str = "resnet50",
    output_stride: int = 8,
    pretrained: Optional[str] = None,
    aux: bool = True,
    channels: int = 512,
    aux_channels: Optional[int] = None,
    aux_weight: float = 0.4,
    multi_grid: Optional[Sequence[int]] = None,
    in_chans: int = 3,
    align_corners: bool = False,
    backbone_kw: Optional[Dict[str, Any]] = None,
) -> SegmentationModel:
    """Backbone (layer1..layer4 features) + ``make_head(feature_channels, channels, num_classes)``
    + the auxiliary FCN on layer3 (``aux_channels`` = channels // 2, i.e. 256 for 512 as mmseg)."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    bb_kw: Dict[str, Any] = dict(output_stride=output_stride, in_chans=in_chans, pretrained=pretrained,
                                 **(backbone_kw or {}))
    if not backbone.startswith("timm:"):
        bb_kw.setdefault("out_indices", (1, 2, 3, 4))
    if multi_grid is not None:
        bb_kw["multi_grid"] = tuple(multi_grid)
    net = create_backbone(backbone, **bb_kw)
    chans = list(net.feature_info.channels())
    head = make_head(chans, channels, num_classes)
    aux_net = aux_head(chans[2], aux_channels or max(channels // 2, 1), num_classes) if aux else None
    return SegmentationModel(net, head, num_classes, aux_head=aux_net, aux_index=2, aux_weight=aux_weight,
                             align_corners=align_corners)


def list_models(pattern: str = "*") -> List[str]:
    """Registered model names matching the shell-style ``pattern``."""
    import segattn.models.zoo  # noqa: F401  (registers the models)

    return MODELS.list(pattern)


def create_model(name: str, num_classes: int, **kwargs: Any) -> SegmentationModel:
    """Build model ``name`` (see :func:`list_models`) for ``num_classes`` classes.

    Common keywords: ``backbone="resnet50"`` (``resnet18/34/50/101/152`` plain, ``...c`` V1c deep stem,
    ``...d`` V1d, or ``"timm:<name>"``), ``output_stride=8``, ``pretrained=None`` (backbone weights:
    a path or URL, never fetched implicitly; a ``save_pretrained`` folder initialises the whole model,
    see :func:`load_whole_model`), ``aux=True``, ``aux_weight=0.4``, ``channels=512``
    (head width), ``multi_grid``, ``in_chans``, ``align_corners``, ``dropout``, ``context_kw``
    (keywords for the context module(s)). ``model.config`` records the call for
    ``save_pretrained`` / ``from_pretrained``.
    """
    import segattn.models.zoo  # noqa: F401

    folder = kwargs.get("pretrained")
    whole = isinstance(folder, (str, os.PathLike)) and os.path.isdir(folder)
    build_kw = {k: v for k, v in kwargs.items() if not (whole and k == "pretrained")}
    model = MODELS.create(name, num_classes, **build_kw)
    model.config = {"name": name.lower(), "num_classes": num_classes, **build_kw}
    if whole:
        load_whole_model(model, os.fspath(folder))
    return model


def load_whole_model(model: nn.Module, folder: str) -> None:
    """Initialise every layer from a ``save_pretrained`` folder (a converted mmseg model, a trained one):
    ``pretrained=FOLDER`` in :func:`create_model`. Tensors shaped by the class count keep their fresh
    initialisation when the count differs; any other difference is an
    :class:`~segattn.models.transfer.InitError` (a ``ValueError``) naming the keys
    (:func:`segattn.models.transfer.init_from_folder`)."""
    report = init_from_folder(model, folder)
    if report.reinitialised or report.ignored:
        print(report.table(), file=sys.stderr)
