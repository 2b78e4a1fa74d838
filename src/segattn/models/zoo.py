"""Registered segmentation models: one per method family, each built as its paper's head.

Shared layout (mmseg protocol): dilated ResNet (output stride 8) -> head on layer4 -> 1x1 classifier
-> bilinear upsampling to the input size; an auxiliary FCN head on layer3 (weight 0.4) in training.
``channels`` is the head width (512 in the papers / mmseg). Deviations shared by all heads: BN + ReLU
everywhere (the CCNet/OCNet references use InPlaceABNSync with LeakyReLU(0.01)), ``align_corners=False``
(mmseg; the PSPNet/PSANet/CCNet code uses True — switch ``align_corners=True``).

Every model traces under ``torch.compile(fullgraph=True)`` and ``torch.export`` unless its docstring
says otherwise.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from torch import nn

from segattn.models.factory import build_segmentor
from segattn.models.heads import ContextHead
from segattn.models.segmentor import SegmentationModel
from segattn.registry import MODELS


def _kw(context_kw: Optional[Mapping[str, Any]], **defaults: Any) -> Dict[str, Any]:
    """Module keywords: the head's defaults, overridden by the user's ``context_kw``."""
    out = dict(defaults)
    out.update(dict(context_kw or {}))
    return out


def _context_model(num_classes: int, context: Optional[str], context_kw: Optional[Mapping[str, Any]],
                   dropout: float, head_opts: Mapping[str, Any], **kwargs: Any) -> SegmentationModel:
    def make_head(chans: List[int], channels: int, k: int) -> nn.Module:
        return ContextHead(chans[-1], channels, k, context=context, context_kw=context_kw, dropout=dropout,
                           **dict(head_opts))

    return build_segmentor(make_head, num_classes, **kwargs)


def _on_backbone_model(num_classes: int, context: str, context_kw_fn: Any, context_kw: Optional[Mapping[str, Any]],
                       dropout: float, **kwargs: Any) -> SegmentationModel:
    """The module runs on the backbone feature itself and carries its own fusion; then the classifier."""

    def make_head(chans: List[int], channels: int, k: int) -> nn.Module:
        kw = _kw(context_kw, **context_kw_fn(chans[-1], channels))
        return ContextHead(chans[-1], channels, k, context=context, context_kw=kw, dropout=dropout,
                           reduce=False, post_conv=False, concat_input=False)

    return build_segmentor(make_head, num_classes, **kwargs)


def _ratio(in_channels: int, channels: int) -> int:
    return max(in_channels // channels, 1)


# --------------------------------------------------------------------------------------------------
@MODELS.register("fcn", paper="Long, Shelhamer, Darrell, CVPR 2015 (mmseg FCNHead)", context=())
def fcn(num_classes: int, *, dropout: float = 0.1, **kwargs: Any) -> SegmentationModel:
    """FCN baseline (no context module), mmseg ``FCNHead(num_convs=2, concat_input=True)``.

    Head: 3x3 ConvBNReLU 2048->512 -> 3x3 ConvBNReLU 512->512 -> concat with the input -> 3x3
    ConvBNReLU -> Dropout2d(0.1) -> 1x1 classifier. The dilated-FCN baseline every method compares with.
    """
    return _context_model(num_classes, None, None, dropout, {}, **kwargs)


@MODELS.register("generic", paper="(any registered context module in the FCN/NL head layout)", context=("*",))
def generic(num_classes: int, *, context: str = "nonlocal", context_kw: Optional[Mapping[str, Any]] = None,
            dropout: float = 0.1, concat_input: bool = True, **kwargs: Any) -> SegmentationModel:
    """Any registered context module dropped into mmseg's NLHead layout (``context="ema"``...).

    Head: 3x3 ConvBNReLU 2048->512 -> ``create_module(context, 512, **context_kw)`` -> 3x3 ConvBNReLU
    -> (``concat_input``) concat with the input -> 3x3 ConvBNReLU -> Dropout2d(0.1) -> classifier.
    This is the controlled setting for comparing modules: only the module changes.
    """
    return _context_model(num_classes, context, context_kw, dropout, {"concat_input": concat_input}, **kwargs)


@MODELS.register("ccnet", paper="Huang et al., ICCV 2019", context=("ccnet",))
def ccnet(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
          **kwargs: Any) -> SegmentationModel:
    """CCNet: RCCAModule of ``networks/ccnet.py`` (= mmseg CCHead).

    Head: ``conva`` 3x3 ConvBN(ReLU) 2048->512 -> criss-cross attention applied R = 2 times (shared
    weights) -> ``convb`` 3x3 ConvBN -> concat with the input (2048+512) -> 3x3 ConvBN -> Dropout2d(0.1)
    -> classifier. Deviation: BN + ReLU instead of InPlaceABNSync (LeakyReLU 0.01).
    """
    return _context_model(num_classes, "ccnet", context_kw, dropout, {}, **kwargs)


@MODELS.register("cgnl", paper="Yue et al., NeurIPS 2018", context=("cgnl",))
def cgnl(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
         **kwargs: Any) -> SegmentationModel:
    """CGNL in the NL head layout. The paper has no segmentation network (classification / detection,
    one block in res4); here the block sits where mmseg's NLHead puts its non-local block: 3x3 reduce
    2048->512 -> CGNL -> 3x3 conv -> concat input -> 3x3 conv -> classifier."""
    return _context_model(num_classes, "cgnl", context_kw, dropout, {}, **kwargs)


@MODELS.register("apcnet", paper="He et al., CVPR 2019", context=("apcnet",))
def apcnet(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
           **kwargs: Any) -> SegmentationModel:
    """APCNet (mmseg APCHead, the authors' code): ACMs at scales (1, 2, 3, 6) on the res5 feature
    itself, ``cat[X, ACM_1..ACM_6]`` -> 3x3 ConvBNReLU -> 512 (inside the ``apcnet`` module, width =
    ``channels`` via its ``reduction``) -> Dropout2d(0.1) -> classifier."""
    return _on_backbone_model(num_classes, "apcnet", lambda c, w: {"reduction": _ratio(c, w)}, context_kw,
                              dropout, **kwargs)
