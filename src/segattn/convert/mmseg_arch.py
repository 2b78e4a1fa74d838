"""The segattn model equivalent to a parsed mmseg config: backbone, heads, eval settings, normalisation.

:func:`architecture_from_config` turns what :func:`segattn.convert.mmseg_read.read_config` returns
into an :class:`MmsegArchitecture` (``create_model`` name and keywords plus what the saved folder
records), or a :class:`~segattn.convert.mmseg_read.ConversionError` naming the unsupported part and
what is supported.

Backbones: mmseg's ``ResNetV1c`` (deep stem) and ``ResNet`` (plain 7x7 stem, the zoo's "b" models),
depth 18 / 34 / 50 / 101, at output stride 8 (dilations (1, 1, 2, 4)) or 16 ((1, 1, 1, 2)), with
an optional stage-4 ``multi_grid``: segattn's ``resnet{depth}c`` / ``resnet{depth}``. Other per-stage
``strides`` / ``dilations`` (the "D32" PSPNets: (1, 2, 2, 2) / (1, 1, 2, 4)) and
``contract_dilation=False`` are passed to segattn's ResNet as they are (``backbone_kw``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from segattn.convert.mmconfig import get
from segattn.convert.mmseg_heads import MULTI_INPUT, head_kwargs
from segattn.convert.mmseg_read import require as _require

IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]

#: mmseg dataset type -> segattn dataset name (the reader whose class list and palette a converted model takes)
DATASETS = {
    "CityscapesDataset": "cityscapes",
    "ADE20KDataset": "ade20k",
    "PascalVOCDataset": "voc12aug",
}
#: mmseg backbone (strides, dilations) -> segattn output stride whose default layout it is
OUTPUT_STRIDES = {((1, 2, 1, 1), (1, 1, 2, 4)): 8, ((1, 2, 2, 1), (1, 1, 1, 2)): 16, ((1, 2, 2, 2), (1, 1, 1, 1)): 32}
BACKBONES = {"ResNetV1c": "c", "ResNet": ""}
DEPTHS = (18, 34, 50, 101)


@dataclass
class MmsegArchitecture:
    """A segattn model equivalent to an mmseg config: ``create_model(name, num_classes, **kwargs)``
    plus what the converter and the saved folder need (head type, eval settings, normalisation).

    ``bgr_input``: the mmseg model took BGR images (``to_rgb=False`` / ``bgr_to_rgb=False``); the
    converter reverses the first conv's input channels so the segattn model takes RGB, and ``mean`` /
    ``std`` are given in RGB order."""

    head: str
    name: str
    num_classes: int
    kwargs: Dict[str, Any]
    eval: Dict[str, Any]
    mean: List[float]
    std: List[float]
    dataset: Optional[str] = None
    crop_size: Optional[List[int]] = None
    bgr_input: bool = False
    notes: List[str] = field(default_factory=list)

    def build(self) -> torch.nn.Module:
        from segattn.models import create_model

        return create_model(self.name, self.num_classes, **self.kwargs)


def _backbone_kwargs(bb: Mapping[str, Any]) -> Tuple[Dict[str, Any], int]:
    """segattn backbone keywords and the stage-4 width multiplier (of ``base_channels``)."""
    kind = bb.get("type")
    _require(kind in BACKBONES, f"backbone type {kind!r} is not supported; supported: ResNetV1c, ResNet (depth "
                                f"{', '.join(map(str, DEPTHS))}, any per-stage strides / dilations)")
    depth = bb.get("depth")
    _require(depth in DEPTHS, f"{kind} depth {depth!r} is not supported; supported: {', '.join(map(str, DEPTHS))}")
    dil, strides = tuple(bb.get("dilations", (1, 1, 1, 1))), tuple(bb.get("strides", (1, 2, 2, 2)))
    _require(len(strides) == len(dil) == 4 and all(isinstance(v, int) and v >= 1 for v in strides + dil)
             and int(bb.get("num_stages", 4)) == 4,
             f"backbone num_stages {bb.get('num_stages', 4)!r} / strides {strides} / dilations {dil} are not "
             "supported; supported: 4 stages, 4 ints >= 1 each")
    contract = bool(bb.get("contract_dilation", False))  # mmseg's ResNet default
    os_ = 4
    for s in strides:
        os_ *= s
    explicit = OUTPUT_STRIDES.get((strides, dil)) != os_ or (not contract and max(dil) > 1)
    _require(bb.get("style", "pytorch") == "pytorch", f"backbone style {bb.get('style')!r} is not supported; supported: pytorch")
    _require(not bb.get("avg_down", False) and bb.get("deep_stem", kind == "ResNetV1c") == (kind == "ResNetV1c"),
             f"{kind} with deep_stem={bb.get('deep_stem')!r} / avg_down={bb.get('avg_down')!r} is not supported")
    _require(tuple(bb.get("out_indices", (0, 1, 2, 3))) == (0, 1, 2, 3), "backbone out_indices must be (0, 1, 2, 3)")
    for key in ("dcn", "plugins"):
        _require(not bb.get(key), f"backbone {key} is not supported by the converter")
    stem, base = int(bb.get("stem_channels", 64)), int(bb.get("base_channels", 64))
    _require(stem == base, f"backbone stem_channels {stem} != base_channels {base} is not supported")
    kw: Dict[str, Any] = {"backbone": f"resnet{depth}{BACKBONES[kind]}", "output_stride": os_}
    backbone_kw: Dict[str, Any] = {}
    if explicit:  # a layout no output_stride gives (the D32 PSPNets), or uncontracted first dilations
        backbone_kw.update(strides=strides, dilations=dil, contract_dilation=contract)
    if base != 64:
        backbone_kw.update(width=base, **({"stem_width": stem // 2} if kind == "ResNetV1c" else {}))
    if depth in (18, 34):  # mmcv's BasicBlock dilates its first 3x3 conv only
        backbone_kw["dilate_conv2"] = False
    if bb.get("multi_grid") is not None:  # mmseg's rates are absolute, segattn's multiply the stage's
        stage4 = dil[3]
        backbone_kw["multi_grid"] = tuple(g / stage4 if g % stage4 else g // stage4 for g in bb["multi_grid"])
    if backbone_kw:
        kw["backbone_kw"] = backbone_kw
    return kw, (8 if depth in (18, 34) else 32)


def _aux_kwargs(aux: Any, stage3: int) -> Dict[str, Any]:
    if aux is None:
        return {"aux": False}
    _require(isinstance(aux, Mapping) and aux.get("type") == "FCNHead",
             f"auxiliary head {aux!r:.80} is not supported; supported: one FCNHead on stage 3, or none")
    ok = (aux.get("in_index") == 2 and aux.get("num_convs", 2) == 1 and not aux.get("concat_input", True)
          and aux.get("kernel_size", 3) == 3 and aux.get("in_channels") == stage3)
    _require(ok, "auxiliary FCNHead must have in_index=2, num_convs=1, concat_input=False, kernel_size=3 "
                 f"(mmseg's default) and in_channels {stage3}, got {dict(aux)!r:.200}")
    return {"aux": True, "aux_channels": int(aux["channels"])}


def _cascade_kwargs(model: Mapping[str, Any], stage3: int) -> Tuple[Mapping[str, Any], Dict[str, Any]]:
    """OCRNet's two stages: an FCNHead on stage 3 (the soft-region logits, segattn's ``head.region``, the
    supervised auxiliary output) and the OCRHead; returns the OCRHead and the keywords of the first."""
    heads = model.get("decode_head")
    ok = isinstance(heads, (list, tuple)) and len(heads) == 2 == int(model.get("num_stages", 2))
    _require(ok and all(isinstance(h, Mapping) for h in heads) and heads[1].get("type") == "OCRHead",
             "CascadeEncoderDecoder: only OCRNet's two stages [FCNHead, OCRHead] are supported")
    fcn, ocr = heads
    good = (fcn.get("type") == "FCNHead" and fcn.get("in_index") == 2 and fcn.get("num_convs", 2) == 1
            and not fcn.get("concat_input", True) and fcn.get("kernel_size", 3) == 3
            and fcn.get("in_channels") == stage3 and fcn.get("num_classes") == ocr.get("num_classes"))
    _require(good, "OCRNet's first stage must be an FCNHead with in_index=2, num_convs=1, concat_input=False, "
                   f"kernel_size=3 and the OCRHead's num_classes, got {dict(fcn)!r:.200}")
    _require(model.get("auxiliary_head") is None, "OCRNet with a separate auxiliary_head is not supported")
    loss = fcn.get("loss_decode")
    weight = float(loss.get("loss_weight", 0.4)) if isinstance(loss, Mapping) else 0.4
    return ocr, {"aux": True, "region_channels": int(fcn["channels"]), "region_weight": weight}


def _normalize_step(pipeline: Any) -> Optional[Mapping[str, Any]]:
    """The ``Normalize`` step of an mmseg 0.x test pipeline (also inside ``MultiScaleFlipAug``)."""
    for step in pipeline if isinstance(pipeline, (list, tuple)) else ():
        if isinstance(step, Mapping):
            if step.get("type") == "Normalize":
                return step
            inner = _normalize_step(step.get("transforms"))
            if inner is not None:
                return inner
    return None


def normalisation(cfg: Mapping[str, Any]) -> Tuple[List[float], List[float], bool, str]:
    """``(mean, std, rgb, where)`` of the model's input: mmseg 1.x ``data_preprocessor`` (``bgr_to_rgb``,
    default False as in mmseg), else mmseg 0.x's test-pipeline ``Normalize`` or ``img_norm_cfg``
    (``to_rgb``, default True), else ImageNet's in RGB. ``rgb`` False: the model took BGR images."""
    pre = get(cfg, "model.data_preprocessor") or cfg.get("data_preprocessor")
    if isinstance(pre, Mapping) and pre.get("mean") is not None:
        return list(pre["mean"]), list(pre.get("std") or [1.0, 1.0, 1.0]), bool(pre.get("bgr_to_rgb", False)), \
            "data_preprocessor"
    for where, step in (("data.test.pipeline Normalize", _normalize_step(get(cfg, "data.test.pipeline"))),
                        ("img_norm_cfg", cfg.get("img_norm_cfg"))):
        if isinstance(step, Mapping) and step.get("mean") is not None:
            return list(step["mean"]), list(step.get("std") or [1.0, 1.0, 1.0]), bool(step.get("to_rgb", True)), where
    return list(IMAGENET_MEAN), list(IMAGENET_STD), True, "default (ImageNet)"


def eval_settings(model: Mapping[str, Any], cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """The eval protocol of ``test_cfg``: whole-image or sliding-window inference (crop, stride), one scale."""
    test = model.get("test_cfg") or cfg.get("test_cfg") or {}
    mode = test.get("mode", "whole")
    _require(mode in ("whole", "slide"), f"test_cfg mode {mode!r} is not supported; supported: whole, slide")
    ev: Dict[str, Any] = {"mode": mode, "scales": [1.0], "flip": False}
    if mode == "slide":
        ev.update(crop_size=list(test["crop_size"]), stride=list(test["stride"]))
    return ev


def architecture_from_config(cfg: Mapping[str, Any], dataset_meta: Optional[Mapping[str, Any]] = None) -> MmsegArchitecture:
    """The segattn equivalent of a parsed mmseg config (``parse_config`` output); :class:`ConversionError`
    naming the unsupported part and what is supported otherwise."""
    model = cfg.get("model")
    _require(isinstance(model, Mapping), "the config has no 'model' dict")
    _require(model.get("type") in ("EncoderDecoder", "CascadeEncoderDecoder"),
             f"segmentor type {model.get('type')!r} is not supported; supported: EncoderDecoder, "
             "CascadeEncoderDecoder (OCRNet)")
    bb = model.get("backbone") or {}
    kwargs, last = _backbone_kwargs(bb)
    base = int(bb.get("base_channels", 64))
    unit = base * last // 8  # stage 1 width; stages double
    dh = model.get("decode_head")
    cascade: Dict[str, Any] = {}
    if model.get("type") == "CascadeEncoderDecoder":
        dh, cascade = _cascade_kwargs(model, unit * 4)
    _require(isinstance(dh, Mapping), "the model has no single decode_head dict (cascaded heads are not supported)")
    stages = MULTI_INPUT[dh["type"]][1] if dh.get("type") in MULTI_INPUT else 32
    want_in = [unit * m // 4 for m in stages] if isinstance(stages, list) else unit * stages // 4
    _require(dh.get("in_channels") == want_in,
             f"decode_head in_channels {dh.get('in_channels')!r} does not match the backbone's stage widths ({want_in})")
    name, head_kw = head_kwargs(dh)
    kwargs.update(head_kw)
    kwargs.update(_aux_kwargs(model.get("auxiliary_head"), unit * 4))
    kwargs.update(cascade)
    align = bool(dh.get("align_corners", False))
    kwargs["align_corners"] = align
    if name == "pspnet":
        kwargs.setdefault("context_kw", {})["align_corners"] = align
    num_classes = int(dh["num_classes"])
    mean, std, rgb, where = normalisation(cfg)
    notes = []
    if not rgb:
        mean, std = mean[::-1], std[::-1]
        notes.append(f"the mmseg model took BGR images ({where}); the first conv's input channels are reversed so "
                     "the segattn model takes RGB (mean / std given in RGB order)")
    dataset_type = cfg.get("dataset_type") or get(cfg, "test_dataloader.dataset.type") or get(cfg, "data.test.type")
    crop = cfg.get("crop_size")
    arch = MmsegArchitecture(
        head=str(dh["type"]), name=name, num_classes=num_classes, kwargs=kwargs, eval=eval_settings(model, cfg),
        mean=[float(m) for m in mean], std=[float(s) for s in std],
        dataset=DATASETS.get(str(dataset_type), None) if dataset_type else None,
        crop_size=list(crop) if isinstance(crop, (list, tuple)) else None, bgr_input=not rgb, notes=notes,
    )
    if dataset_meta and dataset_meta.get("classes") is not None:
        _require(len(dataset_meta["classes"]) == num_classes,
                 f"the checkpoint's meta has {len(dataset_meta['classes'])} classes but the decode head "
                 f"{num_classes}; pass a config whose num_classes matches (--config)")
    return arch


__all__ = ["DATASETS", "IMAGENET_MEAN", "IMAGENET_STD", "MmsegArchitecture", "architecture_from_config",
           "eval_settings", "normalisation"]
