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

import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar

from torch import nn

from segattn.checks import ANY, DROPOUT, checked
from segattn.models.builder import build_segmentor
from segattn.models.heads import ANNHead, ContextHead, DANetHead, EncHead, LightHamHead, OCRHead
from segattn.models.segmentor import SegmentationModel
from segattn.registry import MODELS, MODULES

F = TypeVar("F", bound=Callable[..., SegmentationModel])


def _kw(context_kw: Optional[Mapping[str, Any]], **defaults: Any) -> Dict[str, Any]:
    """Module keywords: the head's defaults, overridden by the user's ``context_kw``."""
    out = dict(defaults)
    out.update(dict(context_kw or {}))
    return out


def _ratio(in_channels: int, channels: int) -> int:
    return max(in_channels // channels, 1)


def register_model(name: str, contexts: Tuple[str, ...], paper: str, variants: Tuple[str, ...] = (),
                   **meta: Any) -> Callable[[F], F]:
    """Register ``fn`` as model ``name`` once every module in ``contexts`` is registered; ``variants``
    are further modules it can use (keyword-selected), recorded with them in the ``context`` metadata."""

    def decorator(fn: F) -> F:
        if all(c in MODULES for c in contexts):
            used = contexts + tuple(v for v in variants if v in MODULES)
            params = inspect.signature(fn).parameters
            limits = {k: v for k, v in (("dropout", DROPOUT), ("in_index", ANY)) if k in params}  # in_index: -1 = last
            MODELS.register(name, paper=paper, context=used, **meta)(checked(**limits)(fn))
        return fn

    return decorator


def _head_model(num_classes: int, head_kw: Callable[[int, int], Dict[str, Any]], dropout: float,
                **kwargs: Any) -> SegmentationModel:
    """A :class:`ContextHead` model; ``head_kw(c_in, channels)`` gives its layout and module keywords."""

    def make_head(chans: List[int], channels: int, k: int) -> nn.Module:
        return ContextHead(chans[-1], channels, k, dropout=dropout, **head_kw(chans[-1], channels))

    return build_segmentor(make_head, num_classes, **kwargs)


def _nl_layout(context: str, context_kw: Optional[Mapping[str, Any]], dropout: float, num_classes: int,
               **kwargs: Any) -> SegmentationModel:
    """mmseg NLHead layout: 3x3 reduce -> module -> 3x3 conv -> concat input -> 3x3 conv -> classifier."""
    return _head_model(num_classes, lambda c, w: {"context": context, "context_kw": _kw(context_kw)}, dropout,
                       **kwargs)


ON_BACKBONE = {"reduce": False, "post_conv": False, "concat": None}


# --------------------------------------------------------------------------------------------------
@register_model("fcn", (), paper="Long, Shelhamer, Darrell, CVPR 2015 (mmseg FCNHead)")
def fcn(num_classes: int, *, dropout: float = 0.1, dilation: int = 1, num_convs: int = 2, kernel_size: int = 3,
        concat_input: bool = True, **kwargs: Any) -> SegmentationModel:
    """FCN baseline (no context module), mmseg ``FCNHead(num_convs=2, concat_input=True)``.

    Head: 3x3 ConvBNReLU 2048->512 -> 3x3 ConvBNReLU 512->512 -> concat with the input -> 3x3
    ConvBNReLU -> Dropout2d(0.1) -> 1x1 classifier: the dilated-FCN baseline every method compares with.
    ``dilation``: of the two head convs before the concat (mmseg's ``FCNHead(dilation=6)``, the "FCN-D6"
    models on an output-stride-16 backbone); the fuse conv stays undilated, as in mmseg.
    mmseg's FCN-HRNet head is ``backbone="hrnet_w18", channels=270, num_convs=1, kernel_size=1,
    concat_input=False, dropout=0`` (one 1x1 ConvBNReLU on the 270-channel concatenation).
    """
    if not isinstance(dilation, int) or isinstance(dilation, bool) or dilation < 1:
        raise ValueError(f"fcn: dilation must be an int >= 1, got {dilation!r}")
    if num_convs not in (1, 2) or kernel_size not in (1, 3):
        raise ValueError(f"fcn: num_convs must be 1 or 2 and kernel_size 1 or 3, got {num_convs}, {kernel_size}")
    layout = {"post_conv": num_convs == 2, "concat": "input" if concat_input else None, "kernel_size": kernel_size}
    model = _head_model(num_classes, lambda c, w: dict(layout), dropout, **kwargs)
    if dilation > 1:
        for block in (model.head.reduce, model.head.post_conv):
            if isinstance(block, nn.Identity):
                continue
            conv = block[0]
            conv.dilation, conv.padding = (dilation, dilation), (dilation * (conv.kernel_size[0] // 2),) * 2
    return model


@register_model("generic", (), paper="(any registered context module in mmseg's NLHead layout)")
def generic(num_classes: int, *, context: str = "nonlocal", context_kw: Optional[Mapping[str, Any]] = None,
            dropout: float = 0.1, concat_input: bool = True, **kwargs: Any) -> SegmentationModel:
    """Any registered context module dropped into mmseg's NLHead layout (``context="ema"``, ...).

    Head: 3x3 ConvBNReLU 2048->512 -> ``create_module(context, 512, **context_kw)`` -> 3x3 ConvBNReLU
    -> (``concat_input``) concat with the input -> 3x3 ConvBNReLU -> Dropout2d(0.1) -> classifier.
    The controlled setting for comparing modules: only the module changes.
    """
    def head_kw(c: int, w: int) -> Dict[str, Any]:
        return {"context": context, "context_kw": _kw(context_kw), "concat": "input" if concat_input else None}

    return _head_model(num_classes, head_kw, dropout, **kwargs)


@register_model("carafe", (), paper="Wang et al., ICCV 2019 (CARAFE upsampling on the FCN head)", upsampler="carafe")
def carafe(num_classes: int, *, dropout: float = 0.1, upsampler_kw: Optional[Mapping[str, Any]] = None,
           **kwargs: Any) -> SegmentationModel:
    """FCN head whose fused features are upsampled x2 by CARAFE before the classifier.

    Head: mmseg ``FCNHead`` (as ``fcn``) -> ``create_upsampler("carafe", channels, scale_factor=2,
    **upsampler_kw)`` (content-aware reassembly, k_up 5, encoder 3x3) -> Dropout2d(0.1) -> classifier at
    twice the feature resolution -> bilinear to the input size. Deviation: the paper evaluates CARAFE
    inside FPN / UperNet decoders (ADE20K, +1.8 mIoU); no segmentation head of that form is in the
    spec, so this is the minimal dilated-FCN setting that isolates the upsampler against ``fcn``.
    """
    up_kw = {"scale_factor": 2, **_kw(upsampler_kw)}
    return _head_model(num_classes, lambda c, w: {"upsampler": "carafe", "upsampler_kw": up_kw}, dropout, **kwargs)


NONLOCAL_MODES = {"embedded_gaussian": "nonlocal", "gaussian": "nonlocal_gaussian", "dot": "nonlocal_dot",
                  "concat": "nonlocal_concat"}


@register_model("nonlocal", ("nonlocal",), paper="Wang, Girshick, Gupta, He, CVPR 2018 (mmseg NLHead)",
                variants=("nonlocal_gaussian", "nonlocal_dot", "nonlocal_concat"))
def nonlocal_(num_classes: int, *, mode: str = "embedded_gaussian", context_kw: Optional[Mapping[str, Any]] = None,
              dropout: float = 0.1, **kwargs: Any) -> SegmentationModel:
    """Non-local network, mmseg NLHead (the paper has no segmentation network).

    Head: 3x3 ConvBNReLU 2048->512 -> NonLocal2d(512, reduction 2, ``mode`` = embedded_gaussian (default,
    scaled), gaussian, dot or concat; zero-initialised output BN) -> 3x3 ConvBNReLU -> concat with the
    input -> 3x3 ConvBNReLU -> Dropout2d(0.1) -> classifier. Sub-sampling off (as mmseg).
    """
    if mode not in NONLOCAL_MODES:
        raise ValueError(f"mode must be one of {sorted(NONLOCAL_MODES)}, got {mode!r}")
    return _nl_layout(NONLOCAL_MODES[mode], context_kw, dropout, num_classes, **kwargs)


@register_model("pspnet", ("ppm",), paper="Zhao, Shi, Qi, Wang, Jia, CVPR 2017")
def pspnet(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
           **kwargs: Any) -> SegmentationModel:
    """PSPNet (hszhao/semseg ``model/pspnet.py``): PPM with bins (1, 2, 3, 6) on the res5 feature,
    branches C/4 (512), ``cat[X, branches]`` -> 3x3 ConvBNReLU -> ``channels`` (512) inside the ``ppm``
    module -> Dropout2d(0.1) -> classifier. PPM upsampling uses ``align_corners=True`` (semseg)."""
    def head_kw(c: int, w: int) -> Dict[str, Any]:
        return {"context": "ppm", "context_kw": _kw(context_kw, out_channels=w), **ON_BACKBONE}

    return _head_model(num_classes, head_kw, dropout, **kwargs)


def _feature_stride(kwargs: Mapping[str, Any]) -> int:
    """Stride of the map a head reads: 4 on an HRNet backbone (its branches resized to the finest and
    concatenated), else the dilated backbone's ``output_stride`` (8 when not given)."""
    if str(kwargs.get("backbone", "")).startswith("hrnet"):
        return 4
    return int(kwargs.get("output_stride") or 8)


@register_model("deeplabv3", ("aspp",), paper="Chen, Papandreou, Schroff, Adam, arXiv 2017")
def deeplabv3(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
              **kwargs: Any) -> SegmentationModel:
    """DeepLabV3: ASPP on the res5 feature: 1x1 + three 3x3 atrous branches (rates (6, 12, 18) at
    output stride 16, doubled at 8, halved at 32; (24, 48, 72) on an HRNet's stride-4 map) + image pooling, each ``channels // 2`` (256) wide;
    concat -> 1x1 ConvBNReLU -> ``channels // 2`` (the paper's 256) -> classifier. mmseg's ASPPHead
    uses 512-wide branches and a 3x3 bottleneck: pass ``channels=1024`` and
    ``context_kw={"bottleneck_kernel": 3}``. Dropout2d(0.1) before the classifier as mmseg."""
    dilations = tuple(r * 16 // _feature_stride(kwargs) for r in (6, 12, 18))

    def head_kw(c: int, w: int) -> Dict[str, Any]:
        half = max(w // 2, 1)
        kw = _kw(context_kw, dilations=dilations, branch_channels=half, out_channels=half)
        return {"context": "aspp", "context_kw": kw, **ON_BACKBONE}

    return _head_model(num_classes, head_kw, dropout, **kwargs)


@register_model("psanet", ("psanet",), paper="Zhao et al., ECCV 2018")
def psanet(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
           **kwargs: Any) -> SegmentationModel:
    """PSANet (hszhao/semseg ``model/psanet.py``): bi-directional PSA on the res5 feature (collect and
    distribute branches reduced to C/4 = 512 = ``channels``, shrink 2, projected back to C) -> concat
    with the input (2C) -> 3x3 ConvBNReLU -> ``channels`` -> Dropout2d(0.1) -> classifier.
    Mask size (59, 59) by default (465 crops); masks smaller than the over-complete one zero-fill."""
    def head_kw(c: int, w: int) -> Dict[str, Any]:
        return {"context": "psanet", "context_kw": _kw(context_kw, mid_reduction=_ratio(c, w)),
                "reduce": False, "post_conv": False, "concat": "input"}

    return _head_model(num_classes, head_kw, dropout, **kwargs)


@register_model("danet", ("danet_pam", "danet_cam"), paper="Fu et al., CVPR 2019", variants=("danet",))
def danet(num_classes: int, *, pam_kw: Optional[Mapping[str, Any]] = None, cam_kw: Optional[Mapping[str, Any]] = None,
          dropout: float = 0.1, fused: bool = False, **kwargs: Any) -> SegmentationModel:
    """DANet (junfu1115/DANet, = mmseg DAHead): two branches on res5, each 3x3 ConvBNReLU 2048->512 ->
    attention (PAM: q/k C/8, no scaling, gamma 0; CAM: reference ``max - energy`` sign) -> 3x3
    ConvBNReLU; summed -> Dropout2d(0.1) -> classifier. Training adds ``"pam"`` and ``"cam"`` logits
    (weights 1.0 each, the reference's equal-weight sum of three losses). The reference uses
    multi-grid (4, 8, 16) in res5: ``multi_grid=(1, 2, 4)``. ``fused=True`` instead applies the
    combined ``danet`` module (PAM + CAM on one shared 3x3-reduced input, residuals summed) in the
    NLHead layout, without the branch outputs."""
    if fused:
        return _nl_layout("danet", pam_kw, dropout, num_classes, **kwargs)

    def make_head(chans: List[int], channels: int, k: int) -> nn.Module:
        return DANetHead(chans[-1], channels, k, dropout=dropout, pam_kw=pam_kw, cam_kw=cam_kw)

    return build_segmentor(make_head, num_classes, **kwargs)


OCNET_VARIANTS = {"base": "ocnet_base", "pyramid": "ocnet_pyramid", "asp": "ocnet_asp"}


@register_model("ocnet", tuple(OCNET_VARIANTS.values()), paper="Yuan & Wang, arXiv 2018 / IJCV 2021")
def ocnet(num_classes: int, *, oc: str = "base", context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.0,
          **kwargs: Any) -> SegmentationModel:
    """OCNet (openseg-group/OCNet.pytorch ``network/resnet101_{base,pyramid,asp}_oc.py``): 3x3 conv
    2048->512 + BN + LeakyReLU(0.01) -> object-context module ``oc`` = ``base`` (self-attention, concat
    with its input, 1x1 conv, Dropout2d 0.05), ``pyramid`` (sub-region attention at sizes 1, 2, 3, 6)
    or ``asp`` (ASPP whose image pooling is a pooled OC branch, Dropout2d 0.1) -> 1x1 classifier (no
    further dropout, as the reference). Deviation: BN + LeakyReLU instead of InPlaceABNSync."""
    if oc not in OCNET_VARIANTS:
        raise ValueError(f"oc must be one of {sorted(OCNET_VARIANTS)}, got {oc!r}")

    def head_kw(c: int, w: int) -> Dict[str, Any]:
        return {"context": OCNET_VARIANTS[oc], "context_kw": _kw(context_kw), "post_conv": False, "concat": None,
                "act": "leaky_relu"}

    return _head_model(num_classes, head_kw, dropout, **kwargs)


@register_model("ann", ("ann_afnb", "ann_apnb"), paper="Zhu, Xu, Bai, Huang, Bai, ICCV 2019")
def ann(num_classes: int, *, afnb_kw: Optional[Mapping[str, Any]] = None, apnb_kw: Optional[Mapping[str, Any]] = None,
        dropout: float = 0.0, **kwargs: Any) -> SegmentationModel:
    """ANN (MendelXu/ANN ``annn.py``; mmseg ANNHead): AFNB fuses res5 queries with pyramid-pooled res4
    keys/values (sizes 1, 3, 6, 8; key/value ``channels // 2`` = 256) back into res5 -> 3x3
    ConvBNReLU 2048->512 -> APNB (shared key/query, pooled anchors, concat + 1x1 ConvBNReLU,
    Dropout2d 0.05) -> 1x1 classifier (no further dropout; mmseg uses 0.1). The reference's "dsn"
    head on res4 is the auxiliary FCN (dropout 0.1 here vs 0.05)."""
    def make_head(chans: List[int], channels: int, k: int) -> nn.Module:
        return ANNHead(chans[-2], chans[-1], channels, k, dropout=dropout, afnb_kw=afnb_kw, apnb_kw=apnb_kw)

    return build_segmentor(make_head, num_classes, **kwargs)


@register_model("ccnet", ("ccnet",), paper="Huang et al., ICCV 2019")
def ccnet(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
          **kwargs: Any) -> SegmentationModel:
    """CCNet (RCCAModule of ``networks/ccnet.py`` = mmseg CCHead): ``conva`` 3x3 ConvBN 2048->512 ->
    criss-cross attention applied R = 2 times (shared weights) -> ``convb`` 3x3 ConvBN -> concat with
    the input (2048+512) -> 3x3 ConvBN -> Dropout2d(0.1) -> classifier. Deviation: BN + ReLU instead
    of InPlaceABNSync (LeakyReLU 0.01)."""
    return _nl_layout("ccnet", context_kw, dropout, num_classes, **kwargs)


@register_model("isanet", ("isa",), paper="Huang et al., arXiv 2019 / IJCV 2021")
def isanet(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
           **kwargs: Any) -> SegmentationModel:
    """ISANet (openseg ``ISA_Module`` = mmseg ISAHead): 3x3 ConvBNReLU 2048->512 -> interlaced sparse
    self-attention (long-range then short-range, groups 8x8) -> concat with the reduced feature ->
    1x1 ConvBNReLU -> 512 -> Dropout2d(0.1) -> classifier."""
    def head_kw(c: int, w: int) -> Dict[str, Any]:
        return {"context": "isa", "context_kw": _kw(context_kw), "post_conv": False, "concat": "reduced",
                "fuse_kernel": 1}

    return _head_model(num_classes, head_kw, dropout, **kwargs)


@register_model("ocrnet", ("ocr",), paper="Yuan, Chen, Wang, ECCV 2020")
def ocrnet(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
           ocr_channels: Optional[int] = None, region_channels: Optional[int] = None, region_weight: float = 0.4,
           act: str = "relu", region_kernel: int = 3, region_dropout: float = 0.1,
           **kwargs: Any) -> SegmentationModel:
    """OCRNet (openseg ``SpatialOCRNet``; mmseg ``CascadeEncoderDecoder`` with FCNHead + OCRHead): the
    soft-region head (3x3 ConvBNReLU 1024->``region_channels`` (256) -> Dropout2d(0.1) -> classifier on
    layer3) gives K = ``num_classes`` region logits; 3x3 ConvBNReLU 2048->512 -> ``ocr`` (gathering, pixel-
    region attention with ``ocr_channels`` = ``channels // 2`` (256), 1x1 ConvBNReLU fusion, no dropout
    as mmseg) -> Dropout2d(0.1) -> classifier. The region head is the auxiliary head: training returns
    its logits as ``"aux"`` with weight ``region_weight`` 0.4 (mmseg's first-stage loss); no second
    auxiliary FCN is built, and ``aux=False`` leaves the regions unsupervised (no ``"aux"`` output). mmseg's R101-D8 checkpoints convert (``segattn convert
    mmseg``). Deviations from the official network: its region head uses 512 channels and
    Dropout2d(0.05), its OCR fusion Dropout2d(0.05) and no classifier dropout (pass
    ``region_channels=512``, ``context_kw={"dropout": 0.05}``, ``dropout=0``), and its activation:
    every openseg config uses InPlaceABN, i.e. LeakyReLU(0.01) after each BN of the head (pass
    ``act="leaky_relu"``); the default ``act="relu"`` is mmseg's (its checkpoints, the recipes).
    mmseg's OCRNet-HRNet: ``backbone="hrnet_w18"`` (or ``hrnet_w48``), ``region_channels=270`` (720),
    ``region_kernel=1``, ``region_dropout=0``, ``dropout=0``: both stages read the concatenated branches."""
    supervised = bool(kwargs.get("aux", True))
    kwargs["aux"] = False  # the region head is the auxiliary head: never a second FCN on layer3
    align = bool(kwargs.get("align_corners", False))

    def make_head(chans: List[int], channels: int, k: int) -> nn.Module:
        return OCRHead(chans[-1], chans[2], channels, k, ocr_channels=ocr_channels or max(channels // 2, 1),
                       region_channels=region_channels or max(channels // 2, 1), dropout=dropout,
                       region_kernel=region_kernel, region_dropout=region_dropout,
                       region_weight=region_weight, supervised=supervised, context_kw=context_kw, align_corners=align,
                       act=act)

    return build_segmentor(make_head, num_classes, **kwargs)


@register_model("gcnet", ("gcnet",), paper="Cao, Xu, Lin, Wei, Hu, ICCVW 2019 / TPAMI 2020 (mmseg GCHead)")
def gcnet(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
          **kwargs: Any) -> SegmentationModel:
    """GCNet, mmseg GCHead (the paper puts GC blocks in the backbone for detection; its segmentation
    entry is mmseg's head): 3x3 ConvBNReLU 2048->512 -> global context block (ratio 1/4, attention
    pooling, channel add) -> 3x3 ConvBNReLU -> concat with the input -> 3x3 ConvBNReLU ->
    Dropout2d(0.1) -> classifier. mmseg's R50/R101-D8 checkpoints convert (``segattn convert mmseg``)."""
    return _nl_layout("gcnet", context_kw, dropout, num_classes, **kwargs)


@register_model("dnlnet", ("dnl",), paper="Yin, Yao, Cao, Li, Zhang, Lin, Hu, ECCV 2020 (mmseg DNLHead)")
def dnlnet(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
           **kwargs: Any) -> SegmentationModel:
    """DNLNet, mmseg DNLHead (= the official ``NLModule`` layout): 3x3 ConvBNReLU 2048->512 ->
    disentangled non-local block (reduction 2, temperature 0.05, whitened pairwise + unary terms) ->
    3x3 ConvBNReLU -> concat with the input -> 3x3 ConvBNReLU -> Dropout2d(0.1) -> classifier.
    mmseg's R50/R101-D8 checkpoints convert (``segattn convert mmseg``). The official Cityscapes block
    (``NLin_fcn``: no W_z, no BN, gamma on the pairwise term) is ``context_kw={"use_out": False,
    "norm": False}``; see the ``dnl`` module."""
    return _nl_layout("dnl", context_kw, dropout, num_classes, **kwargs)


@register_model("emanet", ("ema",), paper="Li et al., ICCV 2019")
def emanet(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
           post_channels: Optional[int] = None, concat_input: bool = False, **kwargs: Any) -> SegmentationModel:
    """EMANet (XiaLiPKU/EMANet ``network.py``): ``fc0`` 3x3 ConvBNReLU 2048->512 -> EMAU(512, K = 64,
    T = 3; bases moved once per optimiser step by ``segattn.models.call_step_hooks``) -> ``fc1`` 3x3
    ConvBNReLU 512->256 -> Dropout2d(0.1) -> classifier. The official network has no auxiliary head
    and uses multi-grid (1, 2, 4): ``aux=False, multi_grid=(1, 2, 4)`` reproduce it (aux stays on by
    default for the common protocol). ``post_channels`` is the width after ``fc1`` (default
    ``channels // 2``). ``concat_input=True`` adds mmseg EMAHead's ``conv_cat``: a 3x3 ConvBNReLU on
    ``cat[res5, fc1 output]`` -> ``post_channels`` before the classifier (off by default: not in the paper)."""
    def head_kw(c: int, w: int) -> Dict[str, Any]:
        post = post_channels or max(w // 2, 1)
        return {"context": "ema", "context_kw": _kw(context_kw), "post_channels": post,
                "concat": "input" if concat_input else None, "fuse_channels": post}

    return _head_model(num_classes, head_kw, dropout, **kwargs)


@register_model("apcnet", ("apcnet",), paper="He et al., CVPR 2019")
def apcnet(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
           **kwargs: Any) -> SegmentationModel:
    """APCNet (mmseg APCHead, the authors' code): ACMs at scales (1, 2, 3, 6) on the res5 feature itself,
    ``cat[X, ACM_1..ACM_6]`` -> 3x3 ConvBNReLU -> ``channels`` (inside the ``apcnet`` module, width set
    through its ``reduction``) -> Dropout2d(0.1) -> classifier."""
    def head_kw(c: int, w: int) -> Dict[str, Any]:
        return {"context": "apcnet", "context_kw": _kw(context_kw, reduction=_ratio(c, w)), **ON_BACKBONE}

    return _head_model(num_classes, head_kw, dropout, **kwargs)


@register_model("dmnet", ("dmnet",), paper="He, Deng, Qiao, ICCV 2019")
def dmnet(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
          **kwargs: Any) -> SegmentationModel:
    """DMNet (mmseg DMHead, contributed by the paper's first author; no other official code): dynamic
    convolutional modules with filter sizes (1, 3, 5, 7) on the res5 feature itself, ``cat[X, DCM_1..DCM_7]``
    -> 3x3 ConvBNReLU -> ``channels`` (inside the ``dmnet`` module, width set through its ``reduction``)
    -> Dropout2d(0.1) -> classifier. mmseg's R50/R101-D8 checkpoints convert (``segattn convert mmseg``)."""
    def head_kw(c: int, w: int) -> Dict[str, Any]:
        return {"context": "dmnet", "context_kw": _kw(context_kw, reduction=_ratio(c, w)), **ON_BACKBONE}

    return _head_model(num_classes, head_kw, dropout, **kwargs)


@register_model("encnet", ("encnet",), paper="Zhang et al., CVPR 2018")
def encnet(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
           se_loss: bool = True, se_weight: float = 0.2, lateral: bool = False, **kwargs: Any) -> SegmentationModel:
    """EncNet (PyTorch-Encoding ``EncNet`` = mmseg EncHead): 3x3 ConvBNReLU 2048->512 (with ``lateral``:
    1x1 ConvBNReLU laterals from layer2 and layer3, concatenated, 3x3 ConvBNReLU) -> context encoding
    module (K = 32 codewords, channel gate) -> Dropout2d(0.1) -> classifier. Training adds the SE loss:
    ``"se"`` class-presence logits from a linear layer on the encoded feature, binary cross entropy
    against the classes present in the label map, weight ``se_weight`` 0.2 (``se_loss=False`` drops
    it). ``lateral`` is off as in mmseg's configs (the official code turns it on for Pascal datasets).
    mmseg's R50/R101-D8 checkpoints convert (``segattn convert mmseg``)."""
    align = bool(kwargs.get("align_corners", False))

    def make_head(chans: List[int], channels: int, k: int) -> nn.Module:
        return EncHead(chans, channels, k, dropout=dropout, context_kw=_kw(context_kw), se_loss=se_loss,
                       se_weight=se_weight, lateral=lateral, align_corners=align)

    return build_segmentor(make_head, num_classes, **kwargs)


@register_model("hamnet", ("hamburger",), paper="Geng et al., ICLR 2021")
def hamnet(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
           ham_channels: Optional[int] = None, in_index: Tuple[int, ...] = (1, 2, 3), norm: str = "gn",
           **kwargs: Any) -> SegmentationModel:
    """Hamburger on the dilated ResNet with mmseg's ``LightHamHead`` layout: layer2, layer3 and layer4
    (all at output stride 8) concatenated -> 1x1 ConvGNReLU -> ``ham_channels`` (default ``channels``,
    512) -> Hamburger (NMF, R = 64, 6 / 7 steps, ``grad="bptt"`` as the light heads, GroupNorm in the
    upper bread) -> 1x1 ConvGNReLU -> ``channels`` -> Dropout2d(0.1) -> classifier; auxiliary FCN on
    layer3. ``norm="gn"`` (default): GroupNorm(32) in the head, as mmseg's and the authors' configs
    (``ham_norm_cfg``); ``norm="bn"``: BatchNorm as the other segattn heads. The auxiliary FCN keeps
    BatchNorm (the authors' ResNet config ``seg_mm/.../ham_r50-d8.py`` uses GN there too: a listed
    deviation).

    Choice: mmseg ships the light head only on SegNeXt's MSCAN backbone (``in_channels`` [64, 160,
    256], 256 wide, ``MD_R`` 16, GroupNorm), with no ResNet model and no checkpoint here; the
    authors' ResNet HamNet (``seg/HamNet``) uses a 3x3 squeeze of res5 only, V2 "cheese" and the
    one-step gradient. This model keeps the light head's layout (the one users train today) on the
    shared dilated-ResNet protocol, with the ResNet widths, so that it is comparable with the other heads. ``context_kw={"grad": "one_step"}`` gives the paper's gradient; ``in_index`` picks
    the backbone levels (feature list indices; ``(-1,)``: layer4 only). On an HRNet backbone the
    head reads the one concatenated map of its four branches (the default becomes ``(-1,)``)."""
    align = bool(kwargs.get("align_corners", False))
    if str(kwargs.get("backbone", "")).startswith("hrnet") and tuple(in_index) == (1, 2, 3):
        in_index = (-1,)  # an HRNet gives one concatenated map: read it once, not three copies of it

    def make_head(chans: List[int], channels: int, k: int) -> nn.Module:
        return LightHamHead(chans, channels, k, ham_channels=ham_channels or channels, in_index=in_index, dropout=dropout,
                            context_kw=_kw(context_kw, grad="bptt"), align_corners=align, norm=norm)

    return build_segmentor(make_head, num_classes, **kwargs)


def _nl_layout_family(name: str, module: str, paper: str, what: str) -> None:
    """Register a model for a module whose paper has no segmentation head: the mmseg NLHead layout."""

    def build(num_classes: int, *, context_kw: Optional[Mapping[str, Any]] = None, dropout: float = 0.1,
              **kwargs: Any) -> SegmentationModel:
        return _nl_layout(module, context_kw, dropout, num_classes, **kwargs)

    build.__name__ = name
    build.__doc__ = (f"{what} Head (mmseg NLHead layout): 3x3 ConvBNReLU 2048->512 -> ``{module}`` -> 3x3 "
                     "ConvBNReLU -> concat with the input -> 3x3 ConvBNReLU -> Dropout2d(0.1) -> classifier.")
    register_model(name, (module,), paper=paper)(build)


_nl_layout_family("cgnl", "cgnl", "Yue et al., NeurIPS 2018",
                  "CGNL. The paper has no segmentation network (one block in res4 for classification).")
_nl_layout_family("dgmn", "dgmn", "Zhang, Xu, Arnab, Torr, CVPR 2020",
                  "DGMN on a dilated FCN; the paper's segmentation head is not released.")
_nl_layout_family("local_relation", "local_relation", "Hu, Zhang, Xie, Lin, ICCV 2019",
                  "Local Relation layer as a context block; the paper has no segmentation network.")
_nl_layout_family("a2net", "a2", "Chen et al., NeurIPS 2018",
                  "A2-Net double attention; the paper has no segmentation network.")
_nl_layout_family("glore", "glore", "Chen et al., CVPR 2019",
                  "GloRe, 'FCN + 1 GloRe unit' (segmentation code not released).")
_nl_layout_family("latentgnn", "latentgnn", "Zhang, Yan, He, ICML 2019",
                  "LatentGNN; the paper has no semantic-segmentation network.")
_nl_layout_family("sgr", "sgr", "Liang, Hu, Zhang, Lin, Xing, NeurIPS 2018",
                  "Symbolic Graph Reasoning (placed after res5 as in the paper's DeepLab-v2 setting). Without "
                  "``context_kw.graph_file`` (or graph tensors) the knowledge graph and word embeddings are random: "
                  "not the paper's SGR.")
_nl_layout_family("graphrep", "graphrep", "Li & Gupta, NeurIPS 2018",
                  "Beyond Grids graph representation; placed on res5 as a context block.")
