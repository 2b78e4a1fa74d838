"""``build_segmentor``: the backbone + head + classifier assembly every registered model uses."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

from torch import nn

from segattn.checks import NON_NEGATIVE, checked
from segattn.models.backbones import ResizeConcat, create_backbone
from segattn.models.heads import aux_head
from segattn.models.segmentor import SegmentationModel

HeadFactory = Callable[[List[int], int, int], nn.Module]


@checked(aux_weight=NON_NEGATIVE)
def build_segmentor(
    make_head: HeadFactory,
    num_classes: int,
    *,
    backbone: str = "resnet50",
    output_stride: Optional[int] = None,
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
    + the auxiliary FCN on layer3 (``aux_channels`` = channels // 2, i.e. 256 for 512 as mmseg).

    ``output_stride`` defaults to 8 (dilated ResNets, timm); an HRNet backbone keeps its four resolutions
    and its heads (and the auxiliary head) read their resized concatenation (``ResizeConcat``, stride 4,
    ``sum`` of the branch widths: 270 for W18, 720 for W48), as mmseg's HRNet models."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    hrnet = backbone.startswith("hrnet")
    bb_kw: Dict[str, Any] = dict(output_stride=output_stride if hrnet or output_stride is not None else 8,
                                 in_chans=in_chans, pretrained=pretrained, **(backbone_kw or {}))
    if not backbone.startswith("timm:") and not hrnet:
        bb_kw.setdefault("out_indices", (1, 2, 3, 4))
    if multi_grid is not None:
        if hrnet:
            raise ValueError(f"multi_grid applies to dilated ResNet backbones, not to {backbone!r}")
        bb_kw["multi_grid"] = tuple(multi_grid)
    net = create_backbone(backbone, **bb_kw)
    chans = list(net.feature_info.channels())
    neck = ResizeConcat(align_corners) if getattr(net, "resize_concat", False) else None
    if neck is not None:
        chans = [sum(chans)] * len(chans)
    head = make_head(chans, channels, num_classes)
    aux_net = aux_head(chans[2], aux_channels or max(channels // 2, 1), num_classes) if aux else None
    return SegmentationModel(net, head, num_classes, aux_head=aux_net, aux_index=2, aux_weight=aux_weight,
                             align_corners=align_corners, neck=neck)
