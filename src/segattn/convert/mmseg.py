"""mmsegmentation checkpoints -> segattn models, without mmcv or mmseg.

An mmseg checkpoint is a pickle ``{"meta": {...}, "state_dict": {...}, ...}``. It is read with
``torch.load(weights_only=True)`` only (:func:`read_mmseg_checkpoint`): a file holding objects whose
loading could run code is refused. The architecture comes from the checkpoint itself: mmengine stores
the merged config text in ``meta["cfg"]`` (mmcv 1.x in ``meta["config"]``), which
:func:`segattn.convert.mmconfig.parse_config` reads as data, never executing it; ``config=`` gives a
flat config file for checkpoints that carry none.

What converts (``EncoderDecoder``, ``ResNetV1c`` depth 50 / 101 at output stride 8, auxiliary
``FCNHead`` on stage 3 or none) and how each decode head maps onto a segattn model:

============  ==========  =====================================================================
mmseg head    segattn     exact differences handled here
============  ==========  =====================================================================
FCNHead       fcn         renames only (``num_convs=2``, ``concat_input=True``)
PSPHead       pspnet      the PPM's ``align_corners`` follows the head (segattn's PPM default: True)
ASPPHead      deeplabv3   bottleneck input blocks permuted (mmseg concatenates the pooled branch
                          first); widths: ``channels=2 x`` mmseg's, 3x3 bottleneck
NLHead        nonlocal    a zero bias for ``conv_out`` (mmseg's has none: a BN follows)
DAHead        danet       scalar gammas -> shape (1,)
CCHead        ccnet       scalar gamma -> shape (1,)
ISAHead       isanet      fuse-conv input halves swapped (mmseg: [context, reduced]); the value
                          convs' biases folded into the output BN's running mean (exact: the
                          attention rows sum to 1)
ANNHead       ann         zero q/k conv biases; APNB's key projection is stored twice (shared
                          with the query): checked equal, read once
APCHead       apcnet      renames only
EncHead       encnet      renames only (``add_lateral``, ``num_codes``, the SE layer and its loss weight
                          from the config; the Encoding's BN1d -> ``context.norm``)
DMHead        dmnet       renames only (``filter_sizes``, ``fusion``)
EMAHead       emanet      ``concat_input`` (mmseg's ``conv_cat``), ``eps=1e-12`` (``F.normalize``),
                          l2-renormalised bases, momentum ``1 - m``; bases (1, C, K) -> (C, K)
GCHead        gcnet       renames only (``ratio``, ``pooling_type``, ``fusion_types``)
DNLHead       dnlnet      a zero bias for ``conv_out`` (as NLHead); ``temperature``, ``use_scale``
OCRHead       ocrnet      ``CascadeEncoderDecoder`` of an FCNHead on stage 3 (the soft regions, segattn's
                          ``head.region``) and the OCRHead; ``ocr_channels``, region width and loss weight
PSAHead       psanet      ``proj_padding=1`` and ``shrink_rule='mmseg'``; ``mask_size`` from the
                          config (97 for Cityscapes / VOC, 66 for ADE20K)
============  ==========  =====================================================================

Every tensor of the checkpoint is used and every tensor of the model is set (anything else is an
error naming the keys); the tests compare logits with mmseg 1.2.2's in float64.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from segattn.convert.mmconfig import ConfigError, get, parse_config
from segattn.errors import SegattnError

StateDict = Dict[str, Tensor]
PathLike = Union[str, "os.PathLike[str]"]

IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]

#: mmseg dataset type -> segattn dataset name (the reader whose class list and palette a converted model takes)
DATASETS = {
    "CityscapesDataset": "cityscapes",
    "ADE20KDataset": "ade20k",
    "PascalVOCDataset": "voc12aug",
}


class ConversionError(SegattnError):
    """A checkpoint or config this converter cannot turn into a segattn model (the message says why)."""


# ----- reading the checkpoint ---------------------------------------------------------------------
@dataclass
class MmsegCheckpoint:
    """What an mmseg checkpoint holds that the converter reads: tensors, config text, dataset meta."""

    state_dict: StateDict
    config_text: Optional[str] = None
    config_source: str = "meta['cfg']"
    dataset_meta: Dict[str, Any] = field(default_factory=dict)
    path: Optional[str] = None


#: globals of an mmengine run's training state (``message_hub``: ``HistoryBuffer`` objects holding numpy
#: arrays) that the converter never reads: replaced by inert objects instead of refusing the file
TRAINING_STATE_GLOBALS = (
    "mmengine.logging.history_buffer.HistoryBuffer",
    "numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype",
    "builtins.getattr",  # numpy 2 pickles dtypes through getattr(numpy.dtypes, ...): replaced, never called
)


def _holds_skipped(node: Any) -> bool:
    from segattn.io import Skipped

    if isinstance(node, Skipped):
        return True
    if isinstance(node, Mapping):
        return any(_holds_skipped(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(_holds_skipped(v) for v in node)
    return False


def read_mmseg_checkpoint(path: PathLike) -> MmsegCheckpoint:
    """Load ``path`` with ``weights_only=True`` and pick out the state dict, config text and dataset meta.

    A file whose pickle holds objects beyond tensors and plain data (which could run code when
    loaded) is refused by :func:`segattn.io.safe_torch_load` with a message naming the first one. The
    training state of mmengine runs (``TRAINING_STATE_GLOBALS``, in ``message_hub``) is replaced by
    inert placeholders, never imported or called; it may not appear in ``meta`` or ``state_dict``.
    """
    from segattn.io import safe_torch_load

    obj = safe_torch_load(path, what="mmseg checkpoint", skip=TRAINING_STATE_GLOBALS)
    name = os.fspath(path)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("state_dict"), Mapping):
        found = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise ConversionError(f"{name}: not an mmseg checkpoint (expected a dict with 'state_dict' and 'meta', "
                              f"found {found})")
    sd = {k: v for k, v in obj["state_dict"].items() if isinstance(v, Tensor)}
    meta = obj.get("meta") if isinstance(obj.get("meta"), Mapping) else {}
    text, source = None, "meta['cfg']"
    for key in ("cfg", "config"):
        if isinstance(meta.get(key), str) and meta[key].strip():
            text, source = meta[key], f"{name}: meta[{key!r}]"
            break
    _require(not _holds_skipped(meta) and not _holds_skipped(obj["state_dict"]),
             f"{name}: meta or state_dict holds training-state objects; expected tensors and plain data there")
    dataset_meta = dict(meta.get("dataset_meta") or {})
    if not dataset_meta and meta.get("CLASSES"):  # mmseg 0.x
        dataset_meta = {"classes": list(meta["CLASSES"]), "palette": meta.get("PALETTE")}
    return MmsegCheckpoint(sd, text, source, dataset_meta, name)


# ----- the architecture, from the config ------------------------------------------------------------
@dataclass
class MmsegArchitecture:
    """A segattn model equivalent to an mmseg config: ``create_model(name, num_classes, **kwargs)``
    plus what the converter and the saved folder need (head type, eval settings, normalisation)."""

    head: str
    name: str
    num_classes: int
    kwargs: Dict[str, Any]
    eval: Dict[str, Any]
    mean: List[float]
    std: List[float]
    dataset: Optional[str] = None
    crop_size: Optional[List[int]] = None

    def build(self) -> torch.nn.Module:
        from segattn.models import create_model

        return create_model(self.name, self.num_classes, **self.kwargs)


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise ConversionError(what)


def _backbone_kwargs(bb: Mapping[str, Any]) -> Dict[str, Any]:
    kind = bb.get("type")
    _require(kind == "ResNetV1c", f"backbone type {kind!r} is not supported; supported: ResNetV1c (depth 50 / 101, "
                                  "output stride 8: the backbone of mmseg's FCN / PSPNet / ... -D8 models)")
    depth = bb.get("depth")
    _require(depth in (50, 101), f"ResNetV1c depth {depth!r} is not supported; supported: 50, 101")
    dil, strides = tuple(bb.get("dilations", ())), tuple(bb.get("strides", ()))
    _require(dil == (1, 1, 2, 4) and strides == (1, 2, 1, 1),
             f"backbone dilations {dil} / strides {strides} are not supported; supported: (1, 1, 2, 4) / (1, 2, 1, 1) "
             "(output stride 8, the -D8 models)")
    _require(bool(bb.get("contract_dilation", False)), "backbone contract_dilation=False is not supported")
    _require(bb.get("style", "pytorch") == "pytorch", f"backbone style {bb.get('style')!r} is not supported; supported: pytorch")
    _require(bb.get("multi_grid") is None, "backbone multi_grid is not supported by the converter")
    _require(tuple(bb.get("out_indices", (0, 1, 2, 3))) == (0, 1, 2, 3), "backbone out_indices must be (0, 1, 2, 3)")
    stem, base = int(bb.get("stem_channels", 64)), int(bb.get("base_channels", 64))
    _require(stem == base, f"backbone stem_channels {stem} != base_channels {base} is not supported")
    kw: Dict[str, Any] = {"backbone": f"resnet{depth}c", "output_stride": 8}
    if base != 64:
        kw["backbone_kw"] = {"width": base, "stem_width": stem // 2}
    return kw


def _aux_kwargs(aux: Any, base: int) -> Dict[str, Any]:
    if aux is None:
        return {"aux": False}
    _require(isinstance(aux, Mapping) and aux.get("type") == "FCNHead",
             f"auxiliary head {aux!r:.80} is not supported; supported: one FCNHead on stage 3, or none")
    ok = (aux.get("in_index") == 2 and aux.get("num_convs", 2) == 1 and not aux.get("concat_input", True)
          and aux.get("kernel_size", 3) == 3 and aux.get("in_channels") == base * 16)
    _require(ok, "auxiliary FCNHead must have in_index=2, num_convs=1, concat_input=False, kernel_size=3 "
                 f"(mmseg's default), got {dict(aux)!r:.200}")
    return {"aux": True, "aux_channels": int(aux["channels"])}


def _head_kwargs(dh: Mapping[str, Any], base: int) -> Tuple[str, Dict[str, Any]]:
    kind = dh.get("type")
    if kind not in HEADS:
        raise ConversionError(f"decode head {kind!r} is not supported; supported: {', '.join(sorted(HEADS))}")
    in_index = dh.get("in_index")
    want = MULTI_INPUT[kind][0] if kind in MULTI_INPUT else 3
    _require(list(in_index) == want if isinstance(in_index, (list, tuple)) else in_index == want,
             f"{kind}: in_index {in_index!r} is not supported; supported: {want}")
    c = int(dh["channels"])
    kw: Dict[str, Any] = {"channels": c, "dropout": float(dh.get("dropout_ratio", 0.1))}
    name, extra = HEADS[kind].kwargs(dh, c)
    kw.update(extra)
    return name, kw


def _cascade_kwargs(model: Mapping[str, Any], base: int) -> Tuple[Mapping[str, Any], Dict[str, Any]]:
    """OCRNet's two stages: an FCNHead on stage 3 (the soft-region logits, segattn's ``head.region``, the
    supervised auxiliary output) and the OCRHead; returns the OCRHead and the keywords of the first."""
    heads = model.get("decode_head")
    ok = isinstance(heads, (list, tuple)) and len(heads) == 2 == int(model.get("num_stages", 2))
    _require(ok and all(isinstance(h, Mapping) for h in heads) and heads[1].get("type") == "OCRHead",
             "CascadeEncoderDecoder: only OCRNet's two stages [FCNHead, OCRHead] are supported")
    fcn, ocr = heads
    good = (fcn.get("type") == "FCNHead" and fcn.get("in_index") == 2 and fcn.get("num_convs", 2) == 1
            and not fcn.get("concat_input", True) and fcn.get("kernel_size", 3) == 3
            and fcn.get("in_channels") == base * 16 and fcn.get("num_classes") == ocr.get("num_classes"))
    _require(good, "OCRNet's first stage must be an FCNHead with in_index=2, num_convs=1, concat_input=False, "
                   f"kernel_size=3 and the OCRHead's num_classes, got {dict(fcn)!r:.200}")
    _require(model.get("auxiliary_head") is None, "OCRNet with a separate auxiliary_head is not supported")
    weight = float((fcn.get("loss_decode") or {}).get("loss_weight", 0.4)) if isinstance(fcn.get("loss_decode"), Mapping) else 0.4
    return ocr, {"aux": True, "region_channels": int(fcn["channels"]), "region_weight": weight}


def architecture_from_config(cfg: Mapping[str, Any], dataset_meta: Optional[Mapping[str, Any]] = None) -> MmsegArchitecture:
    """The segattn equivalent of a parsed mmseg config (``parse_config`` output); :class:`ConversionError`
    naming the unsupported part and what is supported otherwise."""
    model = cfg.get("model")
    _require(isinstance(model, Mapping), "the config has no 'model' dict")
    _require(model.get("type") in ("EncoderDecoder", "CascadeEncoderDecoder"),
             f"segmentor type {model.get('type')!r} is not supported; supported: EncoderDecoder, "
             "CascadeEncoderDecoder (OCRNet)")
    bb = model.get("backbone") or {}
    if bb.get("type") == "HRNet":  # --- HRNet hook (segattn.convert.mmseg_hrnet) ---
        from segattn.convert.mmseg_hrnet import hrnet_architecture

        return hrnet_architecture(cfg, dataset_meta)
    kwargs = _backbone_kwargs(bb)
    base = int(bb.get("base_channels", 64))
    dh = model.get("decode_head")
    cascade: Dict[str, Any] = {}
    if model.get("type") == "CascadeEncoderDecoder":
        dh, cascade = _cascade_kwargs(model, base)
    _require(isinstance(dh, Mapping), "the model has no single decode_head dict (cascaded heads are not supported)")
    stages = MULTI_INPUT[dh["type"]][1] if dh.get("type") in MULTI_INPUT else 32
    want_in = [base * m for m in stages] if isinstance(stages, list) else base * stages
    _require(dh.get("in_channels") == want_in,
             f"decode_head in_channels {dh.get('in_channels')!r} does not match the backbone's stage widths")
    name, head_kw = _head_kwargs(dh, base)
    kwargs.update(head_kw)
    kwargs.update(_aux_kwargs(model.get("auxiliary_head"), base))
    kwargs.update(cascade)
    align = bool(dh.get("align_corners", False))
    kwargs["align_corners"] = align
    if name == "pspnet":
        kwargs.setdefault("context_kw", {})["align_corners"] = align
    num_classes = int(dh["num_classes"])
    test = model.get("test_cfg") or cfg.get("test_cfg") or {}
    mode = test.get("mode", "whole")
    _require(mode in ("whole", "slide"), f"test_cfg mode {mode!r} is not supported; supported: whole, slide")
    ev: Dict[str, Any] = {"mode": mode, "scales": [1.0], "flip": False}
    if mode == "slide":
        ev.update(crop_size=list(test["crop_size"]), stride=list(test["stride"]))
    pre = model.get("data_preprocessor") or cfg.get("data_preprocessor") or {}
    mean, std = list(pre.get("mean", IMAGENET_MEAN)), list(pre.get("std", IMAGENET_STD))
    _require(bool(pre.get("bgr_to_rgb", True)), "data_preprocessor bgr_to_rgb=False (BGR models) is not supported")
    dataset_type = cfg.get("dataset_type") or get(cfg, "test_dataloader.dataset.type")
    crop = cfg.get("crop_size")
    arch = MmsegArchitecture(
        head=str(dh["type"]), name=name, num_classes=num_classes, kwargs=kwargs, eval=ev, mean=mean, std=std,
        dataset=DATASETS.get(str(dataset_type), None) if dataset_type else None,
        crop_size=list(crop) if isinstance(crop, (list, tuple)) else None,
    )
    if dataset_meta and dataset_meta.get("classes") is not None:
        _require(len(dataset_meta["classes"]) == num_classes,
                 f"dataset_meta has {len(dataset_meta['classes'])} classes but the decode head {num_classes}")
    return arch


# ----- the decode heads ---------------------------------------------------------------------------
Rules = List[Tuple[str, str]]


@dataclass
class HeadSpec:
    """How one mmseg decode head maps: segattn keywords, key renames and exact tensor fixes."""

    kwargs: Callable[[Mapping[str, Any], int], Tuple[str, Dict[str, Any]]]
    rules: Rules
    fix: Optional[Callable[[StateDict, Mapping[str, Any]], None]] = None


FCN_RULES: Rules = [("convs.0", "reduce"), ("convs.1", "post_conv"), ("conv_cat", "fuse")]


def _check(dh: Mapping[str, Any], **expected: Any) -> None:
    for key, value in expected.items():
        got = dh.get(key, value)
        got = tuple(got) if isinstance(got, list) else got
        _require(got == value, f"{dh['type']}: {key}={got!r} is not supported; supported: {value!r}")


def _fcn(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    _check(dh, num_convs=2, concat_input=True, kernel_size=3, dilation=1)
    return "fcn", {}


def _psp(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    bins = tuple(dh.get("pool_scales", (1, 2, 3, 6)))
    return "pspnet", {"context_kw": {"bins": bins, "branch_channels": c}}


def _aspp(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    dil = tuple(dh.get("dilations", (1, 12, 24, 36)))
    _require(len(dil) >= 2 and dil[0] == 1, f"ASPPHead dilations {dil} must start with 1 (the 1x1 branch)")
    return "deeplabv3", {"channels": 2 * c,
                         "context_kw": {"dilations": dil[1:], "branch_channels": c, "out_channels": c,
                                        "bottleneck_kernel": 3}}


def _aspp_fix(sd: StateDict, dh: Mapping[str, Any]) -> None:
    """mmseg concatenates [pool, 1x1, atrous...]; segattn [1x1, atrous..., pool]: rotate the input blocks."""
    key = "head.context.bottleneck.0.weight"
    w = sd[key]
    c = int(dh["channels"])
    sd[key] = torch.cat([w[:, c:], w[:, :c]], dim=1)


NL_MODES = {"embedded_gaussian": "embedded_gaussian", "gaussian": "gaussian", "dot_product": "dot", "concatenation": "concat"}


def _nl(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    mode = dh.get("mode", "embedded_gaussian")
    _require(mode in NL_MODES, f"NLHead mode {mode!r} is not supported; supported: {sorted(NL_MODES)}")
    kw: Dict[str, Any] = {"reduction": int(dh.get("reduction", 2))}
    if mode == "embedded_gaussian":
        kw["use_scale"] = bool(dh.get("use_scale", True))
    return "nonlocal", {"mode": NL_MODES[mode], "context_kw": kw}


def _zero_bias(sd: StateDict, weight_key: str) -> None:
    bias = weight_key[: -len("weight")] + "bias"
    if bias not in sd:
        sd[bias] = sd[weight_key].new_zeros(sd[weight_key].shape[0])


def _nl_fix(sd: StateDict, dh: Mapping[str, Any]) -> None:
    _zero_bias(sd, "head.context.conv_out.weight")


def _gammas(sd: StateDict, dh: Mapping[str, Any]) -> None:
    for key in [k for k in sd if k.endswith(".gamma") and sd[k].dim() == 0]:
        sd[key] = sd[key].reshape(1)


def _da(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    pam = int(dh.get("pam_channels", 64))
    _require(c % pam == 0, f"DAHead pam_channels {pam} must divide channels {c}")
    return "danet", {"pam_kw": {"reduction": c // pam}}


def _cc(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    _check(dh, num_convs=2, concat_input=True, kernel_size=3)
    _require(c % 8 == 0, f"CCHead channels {c} must be a multiple of 8 (query/key width channels // 8)")
    return "ccnet", {"context_kw": {"recurrence": int(dh.get("recurrence", 2))}}


def _isa(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    isa = int(dh.get("isa_channels", 256))
    _require(c % isa == 0, f"ISAHead isa_channels {isa} must divide channels {c}")
    return "isanet", {"context_kw": {"down_factor": tuple(dh.get("down_factor", (8, 8))), "key_reduction": c // isa}}


def _isa_fix(sd: StateDict, dh: Mapping[str, Any]) -> None:
    """Swap the fuse conv's input halves; fold each value conv's bias into the output BN's running mean."""
    w = sd["head.fuse.0.weight"]
    half = w.shape[1] // 2
    sd["head.fuse.0.weight"] = torch.cat([w[:, half:], w[:, :half]], dim=1)
    for part in ("long", "short"):
        bias = sd.pop(f"head.context.{part}.value.bias")
        w_out = sd[f"head.context.{part}.out.0.weight"].flatten(1)
        mean = f"head.context.{part}.out.1.running_mean"
        sd[mean] = sd[mean] - (w_out.to(torch.float64) @ bias.to(torch.float64)).to(sd[mean].dtype)


def _ann(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    proj = int(dh.get("project_channels", 256))
    _check(dh, query_scales=(1,))
    pools = tuple(dh.get("key_pool_scales", (1, 3, 6, 8)))
    kw = {"key_channels": proj, "value_channels": proj, "pool_sizes": pools}
    return "ann", {"afnb_kw": dict(kw), "apnb_kw": dict(kw), "dropout": float(dh.get("dropout_ratio", 0.1))}


def _ann_fix(sd: StateDict, dh: Mapping[str, Any]) -> None:
    dup = [k for k in sd if k.startswith("head.apnb.attention.key.")]
    for key in dup:
        twin = key.replace(".key.", ".query.")
        _require(twin in sd and torch.equal(sd[key], sd[twin]),
                 f"ANNHead: APNB's key projection {key!r} differs from its query projection (mmseg shares them)")
        del sd[key]
    for part in ("afnb", "apnb"):
        for qk in ("query", "key"):
            if f"head.{part}.attention.{qk}.0.weight" in sd:
                _zero_bias(sd, f"head.{part}.attention.{qk}.0.weight")


def _apc(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    _check(dh, fusion=True)
    return "apcnet", {"context_kw": {"pool_scales": tuple(dh.get("pool_scales", (1, 2, 3, 6)))}}


def _enc(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    se = bool(dh.get("use_se_loss", True))
    se_weight = float((dh.get("loss_se_decode") or {}).get("loss_weight", 0.2))
    return "encnet", {"context_kw": {"num_codes": int(dh.get("num_codes", 32))}, "se_loss": se,
                      "se_weight": se_weight, "lateral": bool(dh.get("add_lateral", False))}


def _dm(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    return "dmnet", {"context_kw": {"filter_sizes": tuple(dh.get("filter_sizes", (1, 3, 5, 7))),
                                    "fusion": bool(dh.get("fusion", False))}}


def _gc(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    _check(dh, num_convs=2, concat_input=True, kernel_size=3)
    kw = {"ratio": float(dh.get("ratio", 1 / 4)), "pooling": str(dh.get("pooling_type", "att")),
          "fusion": tuple(dh.get("fusion_types", ("channel_add",)))}
    return "gcnet", {"context_kw": kw}


def _dnl(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    _check(dh, num_convs=2, concat_input=True, kernel_size=3, mode="embedded_gaussian")
    kw = {"reduction": int(dh.get("reduction", 2)), "use_scale": bool(dh.get("use_scale", True)),
          "temperature": float(dh.get("temperature", 0.05))}
    return "dnlnet", {"context_kw": kw}


def _ocr(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    _check(dh, scale=1)  # mmseg's scale > 1 also max-pools the queries and never resizes back
    return "ocrnet", {"ocr_channels": int(dh["ocr_channels"])}


_OCR_RULES: Rules = [("0.convs.0", "region.reduce"), ("0.conv_seg", "region.cls.1"), ("1.bottleneck", "reduce"),
                     ("1.conv_seg", "cls.1")] + [
    (f"1.object_context_block.{a}", f"context.{b}") for a, b in (
        ("query_project", "query"), ("key_project", "key"), ("value_project", "value"), ("out_project", "out"),
        ("bottleneck", "bottleneck"))]


def _ema(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    ema = int(dh["ema_channels"])
    kw = {"num_bases": int(dh["num_bases"]), "num_stages": int(dh["num_stages"]), "eps": 1e-12,
          "momentum": 1.0 - float(dh.get("momentum", 0.1)), "renormalize_bases": True}
    return "emanet", {"channels": ema, "post_channels": c, "concat_input": bool(dh.get("concat_input", True)),
                      "context_kw": kw}


def _ema_fix(sd: StateDict, dh: Mapping[str, Any]) -> None:
    key = "head.context.block.mapper.bases"
    sd[key] = sd[key].reshape(sd[key].shape[-2:])


def _psa(dh: Mapping[str, Any], c: int) -> Tuple[str, Dict[str, Any]]:
    _check(dh, compact=False, shrink_factor=2)
    kind = dh.get("psa_type", "bi-direction")
    kw = {"psa_type": kind, "mask_size": tuple(dh.get("mask_size", (97, 97))), "shrink_factor": 2,
          "psa_softmax": bool(dh.get("psa_softmax", True)),
          "normalization_factor": float(dh.get("normalization_factor") or 0) or None,
          "proj_padding": 1, "shrink_rule": "mmseg"}
    return "psanet", {"context_kw": kw}


def _psa_rules(kind: str) -> Rules:
    first = "distribute" if kind == "distribute" else "collect"
    return [("reduce_p", "context.branches.distribute.reduce"), ("attention_p", "context.branches.distribute.attention"),
            ("reduce", f"context.branches.{first}.reduce"), ("attention", f"context.branches.{first}.attention"),
            ("proj", "context.proj"), ("bottleneck", "fuse")]


HEADS: Dict[str, HeadSpec] = {
    "FCNHead": HeadSpec(_fcn, FCN_RULES),
    "PSPHead": HeadSpec(_psp, [("psp_modules.{i}.1", "context.branches.{i}"), ("bottleneck", "context.bottleneck")]),
    "ASPPHead": HeadSpec(_aspp, [("image_pool.1", "context.image_pool"), ("aspp_modules.0", "context.conv1x1"),
                                 ("aspp_modules.{i}", "context.atrous.{i-1}"), ("bottleneck", "context.bottleneck")],
                         _aspp_fix),
    "NLHead": HeadSpec(_nl, FCN_RULES + [("nl_block.conv_out.0", "context.conv_out"),
                                         ("nl_block.conv_out.1", "context.norm"), ("nl_block.theta.0", "context.theta"),
                                         ("nl_block.phi.0", "context.phi"), ("nl_block.g.0", "context.g")], _nl_fix),
    "DAHead": HeadSpec(_da, [("pam_in_conv", "pam_in"), ("pam_out_conv", "pam_out"), ("cam_in_conv", "cam_in"),
                             ("cam_out_conv", "cam_out"), ("pam.query_project", "pam.query"),
                             ("pam.key_project", "pam.key"), ("pam.value_project", "pam.value"),
                             ("pam.gamma.scale", "pam.gamma"), ("cam.gamma.scale", "cam.gamma"),
                             ("pam_conv_seg", "pam_cls.1"), ("cam_conv_seg", "cam_cls.1")], _gammas),
    "CCHead": HeadSpec(_cc, FCN_RULES + [("cca.query_conv", "context.query"), ("cca.key_conv", "context.key"),
                                         ("cca.value_conv", "context.value"), ("cca.gamma.scale", "context.gamma")],
                       _gammas),
    "ISAHead": HeadSpec(_isa, [("in_conv", "reduce"), ("out_conv", "fuse")] + [
        (f"{mm}_relation.{a}", f"context.{ours}.{b}") for mm, ours in (("global", "long"), ("local", "short"))
        for a, b in (("key_project", "key"), ("query_project", "query"), ("value_project", "value"),
                     ("output_project", "out"))], _isa_fix),
    "ANNHead": HeadSpec(_ann, [(f"{mm}.stages.0.{a}", f"{ours}.attention.{b}")
                               for mm, ours in (("fusion", "afnb"), ("context", "apnb"))
                               for a, b in (("query_project", "query"), ("key_project", "key"),
                                            ("value_project", "value"), ("out_project", "out"))]
                        + [("fusion.bottleneck", "afnb.bottleneck"), ("context.bottleneck", "apnb.bottleneck")],
                        _ann_fix),
    "APCHead": HeadSpec(_apc, [(f"acm_modules.{{i}}.{a}", f"context.acms.{{i}}.{b}") for a, b in (
        ("pooled_redu_conv", "block.reasoner.conv"), ("input_redu_conv", "input_conv"), ("global_info", "global_conv"),
        ("gla", "block.reverse.proj"), ("residual_conv", "residual_conv"), ("fusion_conv", "fusion_conv"))]
        + [("bottleneck", "context.bottleneck")]),
    "EMAHead": HeadSpec(_ema, [("ema_in_conv", "reduce"), ("ema_mid_conv.0", "context.conv_in"),
                               ("ema_module.bases", "context.block.mapper.bases"), ("ema_out_conv", "context.conv_out"),
                               ("bottleneck", "post_conv"), ("conv_cat", "fuse")], _ema_fix),
    "PSAHead": HeadSpec(_psa, []),
    "GCHead": HeadSpec(_gc, FCN_RULES + [("gc_block.conv_mask", "context.mask"),
                                         ("gc_block.channel_add_conv", "context.channel_add"),
                                         ("gc_block.channel_mul_conv", "context.channel_mul")]),
    "DNLHead": HeadSpec(_dnl, FCN_RULES + [("dnl_block.conv_out.0", "context.conv_out"),
                                           ("dnl_block.conv_out.1", "context.norm"),
                                           ("dnl_block.theta.0", "context.theta"), ("dnl_block.phi.0", "context.phi"),
                                           ("dnl_block.g.0", "context.g"), ("dnl_block.conv_mask", "context.mask")],
                        _nl_fix),
    "OCRHead": HeadSpec(_ocr, _OCR_RULES),
    "EncHead": HeadSpec(_enc, [("lateral_convs", "laterals"), ("enc_module.encoding_project", "context.project"),
                               ("enc_module.encoding.0", "context.encoding"), ("enc_module.encoding.1", "context.norm"),
                               ("enc_module.fc.0", "context.fc")]),
    "DMHead": HeadSpec(_dm, [("dcm_modules.{i}.filter_gen_conv", "context.dcms.{i}.filter_gen"),
                             ("dcm_modules.{i}.input_redu_conv", "context.dcms.{i}.reduce"),
                             ("dcm_modules.{i}", "context.dcms.{i}"), ("bottleneck", "context.bottleneck")]),
}
#: heads reading several backbone stages: (in_index, in_channels as multiples of base_channels)
MULTI_INPUT: Dict[str, Tuple[List[int], List[int]]] = {"ANNHead": ([2, 3], [16, 32]), "EncHead": ([1, 2, 3], [8, 16, 32])}


# ----- key conversion -----------------------------------------------------------------------------
_CONV_MODULE = [(re.compile(r"\.conv\.(weight|bias)$"), r".0.\1"),
                (re.compile(r"\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)$"), r".1.\1")]


def _collapse(key: str) -> str:
    """mmcv ``ConvModule`` keys (``X.conv.weight``, ``X.bn.bias``) -> ``ConvNormAct`` (``X.0.weight``, ``X.1.bias``)."""
    for pattern, repl in _CONV_MODULE:
        key = pattern.sub(repl, key)
    return key


def _rename(key: str, rules: Rules) -> str:
    """Apply the first matching prefix rule; ``{i}`` matches an index (``{i-1}`` writes it minus one)."""
    for old, new in rules:
        found = re.match("^" + re.escape(old).replace(r"\{i\}", r"(\d+)") + r"(?=\.|$)", key)
        if found:
            if found.groups():
                i = int(found.group(1))
                new = new.replace("{i-1}", str(i - 1)).replace("{i}", str(i))
            return new + key[found.end():]
    return key


def convert_state_dict(state_dict: Mapping[str, Tensor], arch: MmsegArchitecture, dh: Mapping[str, Any]) -> StateDict:
    """mmseg keys and tensors -> the segattn model's (backbone, decode head, auxiliary head)."""
    from segattn.convert.resnet import remap_resnet_state_dict

    if str(arch.kwargs.get("backbone", "")).startswith("hrnet"):  # --- HRNet hook (segattn.convert.mmseg_hrnet) ---
        from segattn.convert.mmseg_hrnet import convert_hrnet_state_dict

        return convert_hrnet_state_dict(state_dict, arch)
    backbone = {k: v for k, v in state_dict.items() if k.startswith("backbone.")}
    _require(bool(backbone), "the checkpoint has no backbone.* tensors")
    bb, _, _ = remap_resnet_state_dict(backbone)
    out: StateDict = {f"backbone.{k}": v for k, v in bb.items()}
    spec = HEADS[arch.head]
    if isinstance(dh, (list, tuple)):  # CascadeEncoderDecoder: the last stage is the head
        dh = dh[-1]
    rules = spec.rules or _psa_rules(str(dh.get("psa_type", "bi-direction")))
    rules = rules + [("conv_seg", "cls.1")]
    leftovers = []
    for key, value in state_dict.items():
        if key.startswith("decode_head."):
            out["head." + _rename(_collapse(key[len("decode_head."):]), rules)] = value
        elif key.startswith("auxiliary_head."):
            rest = _rename(_collapse(key[len("auxiliary_head."):]), [("convs.0", "reduce"), ("conv_seg", "cls.1")])
            out["aux_head." + rest] = value
        elif not key.startswith("backbone."):
            leftovers.append(key)
    _require(not leftovers, f"the checkpoint has tensors outside backbone / decode_head / auxiliary_head: {leftovers[:5]}")
    if spec.fix is not None:
        spec.fix(out, dh)
    return out


def load_converted(model: torch.nn.Module, state: StateDict) -> None:
    """Load ``state`` into ``model`` requiring every key on both sides and equal shapes."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    _require(not missing and not unexpected,
             f"converted keys do not match the segattn model: missing {missing[:6]}, unexpected {unexpected[:6]}")
    bad = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if state[k].shape != own[k].shape]
    _require(not bad, f"converted tensors have other shapes than the model's (key, checkpoint, model): {bad[:4]}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


# ----- the public entry points --------------------------------------------------------------------
def _read_config(config: Union[None, PathLike, Mapping[str, Any]], ckpt: MmsegCheckpoint) -> Dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if config is not None:
        path = os.fspath(config)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path!r} does not exist")
        with open(path, encoding="utf-8") as f:
            return parse_config(f.read(), source=path)
    if ckpt.config_text is None:
        raise ConfigError(f"{ckpt.path}: the checkpoint carries no config (meta['cfg'] / meta['config']); pass the "
                          "model's merged config file with --config (config=)")
    return parse_config(ckpt.config_text, source=ckpt.config_source)


def from_mmseg(checkpoint: PathLike, config: Union[None, PathLike, Mapping[str, Any]] = None, *,
               fallback_config: Optional[Mapping[str, Any]] = None) -> torch.nn.Module:
    """The segattn model of an mmseg checkpoint, in eval mode.

    ``checkpoint`` is a local ``.pth`` written by mmseg (0.x or 1.x); ``config`` a flat (merged)
    mmseg config file (or an already parsed dict), needed only when the checkpoint carries none; it
    then replaces the checkpoint's own. The model's ``pretrained_config``
    holds what :func:`save_mmseg` writes: classes and palette (``meta["dataset_meta"]``, else the
    dataset's built-in list), normalisation, eval settings (whole / slide with crop and stride) and
    the source; ``model.mmseg_architecture`` the parsed :class:`MmsegArchitecture`.
    ``fallback_config`` (a parsed config, e.g. the zoo manifest's copy) is used when neither ``config``
    nor the checkpoint has one.
    """
    ckpt = read_mmseg_checkpoint(checkpoint)
    if config is None and ckpt.config_text is None:
        config = fallback_config
    cfg = _read_config(config, ckpt)
    arch = architecture_from_config(cfg, ckpt.dataset_meta)
    model = arch.build()
    state = convert_state_dict(ckpt.state_dict, arch, cfg["model"]["decode_head"])
    load_converted(model, state)
    model.mmseg_architecture = arch
    model.pretrained_config = _card(arch, ckpt.dataset_meta, source=os.path.basename(os.fspath(checkpoint)))
    return model.eval()


def _builtin_classes(dataset: str) -> Tuple[Optional[List[str]], Optional[List[Any]]]:
    """Class names and palette of segattn's built-in dataset ``dataset`` (``None`` for others)."""
    from segattn.data.datasets.ade20k import ADE20K
    from segattn.data.datasets.cityscapes import Cityscapes
    from segattn.data.datasets.voc import VOC

    cls = {"cityscapes": Cityscapes, "ade20k": ADE20K, "voc12aug": VOC}.get(dataset)
    return (None, None) if cls is None else (list(cls.CLASSES), [list(p) for p in cls.PALETTE])


def _classes(arch: MmsegArchitecture, dataset_meta: Mapping[str, Any]) -> Tuple[List[str], Optional[List[Any]]]:
    classes = dataset_meta.get("classes")
    palette = dataset_meta.get("palette")
    if classes is None and arch.dataset is not None:
        classes, palette = _builtin_classes(arch.dataset)
    if classes is None or len(classes) != arch.num_classes:
        classes = [str(i) for i in range(arch.num_classes)]
    pal = [list(map(int, p)) for p in palette] if palette is not None and len(palette) == arch.num_classes else None
    return [str(c) for c in classes], pal


def _card(arch: MmsegArchitecture, dataset_meta: Mapping[str, Any], source: str) -> Dict[str, Any]:
    classes, palette = _classes(arch, dataset_meta)
    return {"classes": classes, "palette": palette, "mean": arch.mean, "std": arch.std, "eval": arch.eval,
            "crop_size": arch.crop_size, "dataset": arch.dataset, "source": f"mmsegmentation checkpoint {source}"}


def check_out_folder(out: PathLike, overwrite: bool) -> None:
    """Refuse ``out`` before any work: a non-empty folder without ``overwrite``, or an unwritable place."""
    from segattn.io import check_writable_dir

    target = os.fspath(out)
    if os.path.exists(target) and not os.path.isdir(target):
        raise FileExistsError(f"--out {target} is a file, expected a folder")
    if os.path.isdir(target) and os.listdir(target) and not overwrite:
        raise FileExistsError(f"{target} already exists and is not empty; pass --overwrite (overwrite=True) to replace "
                              "a segattn folder there")
    check_writable_dir(os.path.dirname(os.path.abspath(target)), "--out parent folder")


def save_mmseg(checkpoint: PathLike, out: PathLike, config: Union[None, PathLike, Mapping[str, Any]] = None, *,
               overwrite: bool = False, metrics: Optional[Mapping[str, float]] = None,
               source: Optional[str] = None, fallback_config: Optional[Mapping[str, Any]] = None) -> str:
    """Convert ``checkpoint`` (read once) and write a segattn folder (``save_pretrained`` format) to ``out``.

    ``fallback_config``: see :func:`from_mmseg`. ``metrics`` (fractions) and ``source`` go to the
    model card. The output folder is checked before the conversion starts.
    """
    check_out_folder(out, overwrite)
    model = from_mmseg(checkpoint, config, fallback_config=fallback_config)
    card = dict(model.pretrained_config)
    if source:
        card["source"] = source
    return model.save_pretrained(out, overwrite=overwrite, metrics=dict(metrics or {}), **card)


__all__ = ["ConversionError", "MmsegArchitecture", "MmsegCheckpoint", "architecture_from_config",
           "convert_state_dict", "from_mmseg", "read_mmseg_checkpoint", "save_mmseg", "HEADS"]
