"""``create_model`` / ``list_models`` and the shared builder every registered model uses."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence

from torch import nn

from segattn.checks import NON_NEGATIVE, checked
from segattn.models.backbones import create_backbone
from segattn.models.heads import aux_head
from segattn.models.segmentor import SegmentationModel
from segattn.registry import MODELS

HeadFactory = Callable[[List[int], int, int], nn.Module]


@checked(aux_weight=NON_NEGATIVE)
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


@checked()
def list_models(pattern: str = "*") -> List[str]:
    """Registered model names matching the shell-style ``pattern``."""
    import segattn.models.zoo  # noqa: F401  (registers the models)

    return MODELS.list(pattern)


@checked()
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
    ``pretrained=FOLDER`` in :func:`create_model` (``model.pretrained`` in a run config). Classifier
    tensors (``cls.1``, ``pam_cls.1``, ...) whose shape differs (another number of classes) keep their fresh
    initialisation; any other difference is a ``ValueError`` naming the keys."""
    from segattn.models.weights import load_pretrained_state, read_pretrained_config

    state = load_pretrained_state(folder, read_pretrained_config(folder))
    own = model.state_dict()
    fresh = [k for k in state if k in own and state[k].shape != own[k].shape and k.endswith(("cls.1.weight", "cls.1.bias"))]
    for key in fresh:
        del state[key]
    missing = sorted(k for k in own if k not in state and k not in fresh)
    unexpected = sorted(k for k in state if k not in own)
    shapes = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"pretrained folder {folder!r} does not fit this model (build it with the folder's "
                         f"config.json keywords): missing {missing[:4]}, unexpected {unexpected[:4]}, "
                         f"other shapes {shapes[:4]}")
    model.load_state_dict(state, strict=False)
    if fresh:
        print(f"pretrained {folder}: every layer loaded; the classifiers ({len(fresh)} tensors) start fresh "
              "for the new number of classes")
