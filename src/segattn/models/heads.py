"""Decode heads: reduction conv -> context module(s) -> the paper's fusion -> dropout + 1x1 classifier.

A head maps the backbone feature list ``feats`` (layer1..layer4 by default) to a dict of logits at
feature resolution: ``"out"`` plus extra supervised outputs (DANet's ``"pam"`` / ``"cam"``, EncNet's
``"se"`` class-presence logits, produced only in training). Context modules are built by name from the registry (as :func:`segattn.create_module` does) and
their ``out_channels`` attribute, so any registered module can be placed in :class:`ContextHead`.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

import segattn.modules  # noqa: F401  (registers every context module and upsampler)
from segattn.layers import ConvNormAct
from segattn.registry import MODULES, UPSAMPLERS


def classifier(channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    """``Dropout2d(p) -> conv1x1(channels -> num_classes)`` (mmseg ``cls_seg``)."""
    return nn.Sequential(nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
                         nn.Conv2d(channels, num_classes, 1))


def _module_out(module: nn.Module, in_channels: int) -> int:
    return int(getattr(module, "out_channels", in_channels))


def _call(module: nn.Module, *args: Tensor) -> Tensor:
    """Call a context module and keep only its output (modules may return ``(y, factors)``)."""
    out = module(*args)
    return out[0] if isinstance(out, tuple) else out


class ContextHead(nn.Module):
    """mmseg's FCN-with-context layout (NLHead, CCHead, FCNHead) with switchable stages::

        x   = feats[in_index]                                   (B, C_in, h, w)
        r   = ConvBNAct_k(C_in -> channels)(x)                  "reduce" (reduction conv)
        c   = context module on r                               "context" (skipped for FCN)
        c   = ConvBNAct_k(c -> post_channels)(c)                "post_conv"
        y   = ConvBNAct_f(cat[x or r, c] -> fuse_channels)      "concat": "input" (x), "reduced" (r), None
        y   = upsampler(y)  (B, channels, s h, s w)            "upsampler": e.g. "carafe" (optional)
        out = conv1x1(Dropout2d(y))

    ``reduce=False`` puts the module on the backbone feature itself (PPM, ASPP, APCNet, PSANet,
    whose modules carry their own fusion convs). ``fuse_channels`` defaults to ``channels`` (mmseg's
    EMAHead fuses to its narrower ``post_channels``).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        *,
        context: Optional[str] = None,
        context_kw: Optional[Mapping[str, Any]] = None,
        reduce: bool = True,
        post_conv: bool = True,
        post_channels: Optional[int] = None,
        concat: Optional[str] = "input",
        kernel_size: int = 3,
        fuse_kernel: int = 3,
        fuse_channels: Optional[int] = None,
        dropout: float = 0.1,
        act: str = "relu",
        in_index: int = -1,
        upsampler: Optional[str] = None,
        upsampler_kw: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__()
        if concat not in ("input", "reduced", None):
            raise ValueError(f"concat must be 'input', 'reduced' or None, got {concat!r}")
        self.in_index, self.concat = in_index, concat
        self.reduce = ConvNormAct(in_channels, channels, kernel_size, act=act) if reduce else nn.Identity()
        reduced = channels if reduce else in_channels
        self.context = MODULES.create(context, reduced, **dict(context_kw or {})) if context else nn.Identity()
        width = _module_out(self.context, reduced) if context else reduced
        post = post_channels or channels
        self.post_conv = ConvNormAct(width, post, kernel_size, act=act) if post_conv else nn.Identity()
        width = post if post_conv else width
        skip = {"input": in_channels, "reduced": reduced, None: 0}[concat]
        fused = fuse_channels or channels
        self.fuse = ConvNormAct(skip + width, fused, fuse_kernel, act=act) if concat else None
        width = fused if concat else width
        self.upsample = UPSAMPLERS.create(upsampler, width, **dict(upsampler_kw or {})) if upsampler else nn.Identity()
        self.cls = classifier(width, num_classes, dropout)

    def features(self, feats: Sequence[Tensor]) -> Tensor:
        x = feats[self.in_index]
        r = self.reduce(x)
        skip = r if self.concat == "reduced" else x
        c = _call(self.context, r)
        del r  # drop each map once used, so that inference holds no more than mmseg's heads at the peak
        y = self.post_conv(c)
        del c
        if self.fuse is not None:
            y = self.fuse(torch.cat([skip, y], dim=1))
        return y

    def forward(self, feats: Sequence[Tensor]) -> Dict[str, Tensor]:
        return {"out": self.cls(_call(self.upsample, self.features(feats)))}


class DANetHead(nn.Module):
    """DANet head (``encoding/models/sseg/danet.py`` = mmseg DAHead)::

        PAM branch: conv5a 3x3 (C_in -> channels) -> danet_pam -> conv51 3x3      -> "pam" classifier
        CAM branch: conv5c 3x3 (C_in -> channels) -> danet_cam -> conv52 3x3      -> "cam" classifier
        out = classifier(pam_feat + cam_feat)                                      (Dropout2d 0.1 + 1x1)

    In training the head also returns ``"pam"`` and ``"cam"`` logits, each with loss weight 1.0 (the
    reference sums the three cross-entropies with equal weights).
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int, *, dropout: float = 0.1,
                 pam_kw: Optional[Mapping[str, Any]] = None, cam_kw: Optional[Mapping[str, Any]] = None,
                 branch_weight: float = 1.0) -> None:
        super().__init__()
        self.pam_in = ConvNormAct(in_channels, channels, 3)
        self.pam = MODULES.create("danet_pam", channels, **dict(pam_kw or {}))
        self.pam_out = ConvNormAct(_module_out(self.pam, channels), channels, 3)
        self.cam_in = ConvNormAct(in_channels, channels, 3)
        self.cam = MODULES.create("danet_cam", channels, **dict(cam_kw or {}))
        self.cam_out = ConvNormAct(_module_out(self.cam, channels), channels, 3)
        self.cls = classifier(channels, num_classes, dropout)
        self.pam_cls = classifier(channels, num_classes, dropout)
        self.cam_cls = classifier(channels, num_classes, dropout)
        self.loss_weights = {"pam": float(branch_weight), "cam": float(branch_weight)}

    def forward(self, feats: Sequence[Tensor]) -> Dict[str, Tensor]:
        x = feats[-1]
        pam = self.pam_out(_call(self.pam, self.pam_in(x)))
        cam = self.cam_out(_call(self.cam, self.cam_in(x)))
        outs = {"out": self.cls(pam + cam)}
        if self.training:
            outs["pam"] = self.pam_cls(pam)
            outs["cam"] = self.cam_cls(cam)
        return outs


class ANNHead(nn.Module):
    """ANN head (MendelXu/ANN ``models/seg/nets/annn.py``)::

        f = AFNB(high = res5, low = res4)   queries on res5, pyramid-pooled keys/values from res4 (S = 110),
                                            fused with res5: BN(conv1x1(cat[ctx, res5])) + Dropout2d(0.05)
        f = ConvBNReLU_3x3(C5 -> channels)(f)
        f = APNB(f)                         shared key/query, pooled anchors, concat + 1x1 + Dropout2d(0.05)
        out = conv1x1(f)                    (``dropout`` 0 as the reference; mmseg uses 0.1)

    Key/value widths ``channels // 2`` in both blocks (256 for 512, the official values).
    """

    def __init__(self, low_channels: int, in_channels: int, channels: int, num_classes: int, *,
                 dropout: float = 0.0, afnb_kw: Optional[Mapping[str, Any]] = None,
                 apnb_kw: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        kv = max(channels // 2, 1)
        self.afnb = MODULES.create("ann_afnb", in_channels, **{"low_channels": low_channels, "key_channels": kv,
                                                              "value_channels": kv, **dict(afnb_kw or {})})
        self.bottleneck = ConvNormAct(_module_out(self.afnb, in_channels), channels, 3)
        self.apnb = MODULES.create("ann_apnb", channels, **{"key_channels": kv, "value_channels": kv,
                                                           **dict(apnb_kw or {})})
        self.cls = classifier(_module_out(self.apnb, channels), num_classes, dropout)

    def forward(self, feats: Sequence[Tensor]) -> Dict[str, Tensor]:
        fused = _call(self.afnb, feats[-1], feats[-2])
        return {"out": self.cls(_call(self.apnb, self.bottleneck(fused)))}


class OCRHead(nn.Module):
    """OCRNet head (openseg ``SpatialOCRNet``; mmseg ``CascadeEncoderDecoder`` of FCNHead + OCRHead)::

        L   = region FCN on feats[region_index] (layer3): 3x3 ConvBNReLU (C_3 -> region_channels)
              -> Dropout2d -> 1x1 classifier: soft-region logits (B, K, h, w)         "region"
        f   = ConvBNReLU_3x3(C_4 -> channels)(layer4)                                 "reduce"
        f   = ocr(f, L): gathering, pixel-region attention (``ocr_channels``), fusion  "context"
        out = conv1x1(Dropout2d(f))

    The region head is the model's auxiliary head (an FCN on layer3, as ``aux_head``), and it is used
    at inference too. In training (``supervised``) the head returns its logits as ``"aux"`` with loss weight
    ``region_weight`` (0.4, mmseg's ``loss_weight`` of the first stage; the official code's dsn loss).
    They are resized to the layer4 size when the two differ (output stride 32). ``act`` is the
    activation of every ConvBNAct of the head (region FCN, reduction, OCR block): ``"relu"`` (mmseg)
    or ``"leaky_relu"`` (slope 0.01, openseg's InPlaceABN in all its configs).
    """

    def __init__(self, in_channels: int, region_in_channels: int, channels: int, num_classes: int, *,
                 ocr_channels: int = 256, region_channels: int = 256, dropout: float = 0.1,
                 region_dropout: float = 0.1, region_weight: float = 0.4, supervised: bool = True, region_index: int = 2,
                 context_kw: Optional[Mapping[str, Any]] = None, align_corners: bool = False,
                 act: str = "relu", region_kernel: int = 3) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.region = ContextHead(region_in_channels, region_channels, num_classes, post_conv=False, concat=None,
                                  dropout=region_dropout, in_index=region_index, act=act, kernel_size=region_kernel)
        self.reduce = ConvNormAct(in_channels, channels, 3, act=act)
        kw = {"num_regions": num_classes, "key_channels": ocr_channels, "region_head": False, "dropout": 0.0,
              "act": act}
        self.context = MODULES.create("ocr", channels, **{**kw, **dict(context_kw or {})})
        self.cls = classifier(_module_out(self.context, channels), num_classes, dropout)
        self.supervised = supervised
        self.loss_weights = {"aux": float(region_weight)} if supervised else {}

    def forward(self, feats: Sequence[Tensor]) -> Dict[str, Tensor]:
        regions = self.region(feats)["out"]
        f = self.reduce(feats[-1])
        if regions.shape[-2:] != f.shape[-2:]:
            regions_in = torch.nn.functional.interpolate(regions, size=f.shape[-2:], mode="bilinear",
                                                         align_corners=self.align_corners)
        else:
            regions_in = regions
        outs = {"out": self.cls(_call(self.context, f, regions_in))}
        if self.training and self.supervised:
            outs["aux"] = regions
        return outs


class EncHead(nn.Module):
    """EncNet head (mmseg ``EncHead`` = PyTorch-Encoding ``EncHead``)::

        f   = ConvBNReLU_3x3(C_4 -> channels)(res5)                    "bottleneck" (official conv5)
        f   = ConvBNReLU_3x3(cat[f, l_2, l_3] -> channels)             with ``lateral``: l_i = ConvBNReLU_1x1
                                                                      (res_i -> channels), resized to f
        y, e = encnet(f)                                                 the encoding module (K = 32 codes)
        out = conv1x1(Dropout2d(y)),   se = Linear(channels -> classes)(e)   (B, K) class presence

    In training the head also returns ``"se"`` (not a map: its loss kind is ``"presence"``, EncNet's
    SE loss, binary cross entropy against the classes present in the label map) with loss weight
    ``se_weight`` (0.2 as the paper and mmseg). ``se_loss=False`` drops the SE layer.
    ``lateral=True`` is the official Pascal setting (mmseg ``add_lateral``, off in its configs); the
    laterals read ``feats[lateral_index]`` (layer2 and layer3).
    """

    def __init__(self, in_channels: Sequence[int], channels: int, num_classes: int, *, dropout: float = 0.1,
                 context_kw: Optional[Mapping[str, Any]] = None, se_loss: bool = True, se_weight: float = 0.2,
                 lateral: bool = False, lateral_index: Sequence[int] = (1, 2),
                 align_corners: bool = False) -> None:
        super().__init__()
        self.lateral_index, self.align_corners = tuple(lateral_index), align_corners
        self.bottleneck = ConvNormAct(in_channels[-1], channels, 3)
        self.laterals = nn.ModuleList(ConvNormAct(in_channels[i], channels, 1) for i in self.lateral_index) \
            if lateral else None
        self.fusion = ConvNormAct((1 + len(self.lateral_index)) * channels, channels, 3) if lateral else None
        self.context = MODULES.create("encnet", channels, **dict(context_kw or {}))
        self.cls = classifier(channels, num_classes, dropout)
        self.se_layer = nn.Linear(channels, num_classes) if se_loss else None
        self.loss_weights = {"se": float(se_weight)} if se_loss else {}
        self.loss_kinds = {"se": "presence"} if se_loss else {}

    def forward(self, feats: Sequence[Tensor]) -> Dict[str, Tensor]:
        f = self.bottleneck(feats[-1])
        if self.laterals is not None and self.fusion is not None:
            size = f.shape[-2:]
            lat = [torch.nn.functional.interpolate(conv(feats[i]), size=size, mode="bilinear",
                                                   align_corners=self.align_corners)
                   for i, conv in zip(self.lateral_index, self.laterals)]
            f = self.fusion(torch.cat([f, *lat], dim=1))
        y, e, _ = self.context.encode(f)
        outs = {"out": self.cls(y)}
        if self.training and self.se_layer is not None:
            outs["se"] = self.se_layer(e.to(self.se_layer.weight.dtype))
        return outs


class LightHamHead(nn.Module):
    """mmseg ``LightHamHead`` (SegNeXt's decoder, the authors' light Hamburger head)::

        x   = cat[resize(feats[i]) for i in in_index]     to the size of the first selected level
        x   = ConvNormReLU_1x1(sum C_i -> ham_channels)    "squeeze"
        x   = hamburger(x)                                   ReLU(x + Norm(W_u NMF(ReLU(W_l x))))
        x   = ConvNormReLU_1x1(ham_channels -> channels)   "align"
        out = conv1x1(Dropout2d(x))

    ``norm`` (squeeze, the Hamburger's upper bread, align): ``"gn"`` by default, GroupNorm(32) as the
    configs this head comes from (mmseg's SegNeXt configs and the authors' ``seg_light_ham`` /
    ``seg_mm`` configs: ``ham_norm_cfg = dict(type='GN', num_groups=32)``; ``gcd(32, C)`` groups for a
    width 32 does not divide); ``"bn"`` gives BatchNorm, as the other segattn heads.
    """

    def __init__(self, in_channels: Sequence[int], channels: int, num_classes: int, *, ham_channels: int = 512,
                 in_index: Sequence[int] = (1, 2, 3), dropout: float = 0.1,
                 context_kw: Optional[Mapping[str, Any]] = None, align_corners: bool = False,
                 norm: str = "gn") -> None:
        super().__init__()
        if norm not in ("bn", "gn"):
            raise ValueError(f"LightHamHead norm must be 'gn' (GroupNorm(32), the official configs) or 'bn', got {norm!r}")
        self.in_index, self.align_corners = tuple(in_index), align_corners
        self.squeeze = ConvNormAct(sum(in_channels[i] for i in self.in_index), ham_channels, 1, norm=norm)
        self.context = MODULES.create("hamburger", ham_channels, **{"norm": norm, **dict(context_kw or {})})
        self.align = ConvNormAct(ham_channels, channels, 1, norm=norm)
        self.cls = classifier(channels, num_classes, dropout)

    def forward(self, feats: Sequence[Tensor]) -> Dict[str, Tensor]:
        size = feats[self.in_index[0]].shape[-2:]
        levels = [feats[i] if feats[i].shape[-2:] == size else
                  torch.nn.functional.interpolate(feats[i], size=size, mode="bilinear",
                                                  align_corners=self.align_corners) for i in self.in_index]
        x = self.squeeze(torch.cat(levels, dim=1))
        return {"out": self.cls(self.align(_call(self.context, x)))}


def fcn_head(in_channels: int, channels: int, num_classes: int, num_convs: int = 2, concat_input: bool = True,
             dropout: float = 0.1) -> ContextHead:
    """mmseg FCNHead: ``num_convs`` (1 or 2) 3x3 ConvBNReLU, optional concat with the input."""
    if num_convs not in (1, 2):
        raise ValueError(f"num_convs must be 1 or 2, got {num_convs}")
    return ContextHead(in_channels, channels, num_classes, post_conv=num_convs == 2,
                       concat="input" if concat_input else None, dropout=dropout)


def aux_head(in_channels: int, channels: int, num_classes: int, dropout: float = 0.1) -> ContextHead:
    """The auxiliary FCN on stage 4 (res4): 3x3 ConvBNReLU -> Dropout2d(0.1) -> 1x1 classifier."""
    return fcn_head(in_channels, channels, num_classes, num_convs=1, concat_input=False, dropout=dropout)


__all__ = ["ContextHead", "DANetHead", "ANNHead", "OCRHead", "EncHead", "LightHamHead", "classifier", "fcn_head", "aux_head"]
