"""mmsegmentation HRNet checkpoints (FCN-HRNet, OCRNet-HRNet) -> segattn models.

Reached from :mod:`segattn.convert.mmseg` (``architecture_from_config`` hands over a
config whose backbone is ``HRNet``; ``convert_state_dict`` a model built with an ``hrnet_*`` backbone).

=====================  =========================================================================
mmseg                  segattn
=====================  =========================================================================
``HRNet`` (``extra``)  ``backbone="hrnet_w18_small" | "hrnet_w18" | "hrnet_w48"`` (other stage layouts:
                       ``backbone_kw={"stages": ...}``); ``backbone.*`` keys unchanged
``resize_concat``      :class:`~segattn.models.backbones.hrnet.ResizeConcat` (built with any HRNet
                       backbone): both heads read the concatenated branches, ``in_index=(0, 1, 2, 3)``
FCNHead                ``fcn`` with ``num_convs``, ``kernel_size``, ``concat_input`` from the config
                       (mmseg's HRNet models: one 1x1 ConvBNReLU of ``channels`` = sum of the widths)
FCNHead + OCRHead      ``ocrnet`` with ``region_channels`` / ``region_kernel`` / ``region_dropout`` of the
(Cascade)              FCN stage, ``channels`` / ``ocr_channels`` / ``dropout`` of the OCR stage
``dropout_ratio=-1``   no dropout (``dropout=0``)
=====================  =========================================================================

Every tensor is used and every tensor of the model is set; the tests compare the logits with mmseg
1.2.2's in float64 (``tests/convert/test_mmseg_hrnet.py``).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import Tensor

from segattn.convert.mmconfig import get
from segattn.convert.mmseg_arch import DATASETS, MmsegArchitecture, eval_settings, normalisation
from segattn.convert.mmseg_heads import HEADS
from segattn.convert.mmseg_read import ConversionError

StateDict = Dict[str, Tensor]

def _named_layouts() -> Dict[str, List[Dict[str, Any]]]:
    """segattn backbone name -> its stage specs (the layouts of mmseg's ``hr18s`` / ``hr18`` / ``hr48`` configs)."""
    from segattn.models.backbones.hrnet import VARIANTS, hrnet_stages

    return {name: hrnet_stages(width, small) for name, (width, small) in VARIANTS.items()}


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise ConversionError(what)


def _stages(bb: Mapping[str, Any]) -> List[Dict[str, Any]]:
    extra = bb.get("extra")
    _require(isinstance(extra, Mapping) and all(f"stage{k}" in extra for k in (1, 2, 3, 4)),
             "HRNet backbone: 'extra' must hold stage1..stage4")
    stages = []
    for k in (1, 2, 3, 4):
        s = extra[f"stage{k}"]
        try:
            stages.append({"num_modules": int(s["num_modules"]), "num_branches": int(s["num_branches"]),
                           "block": str(s["block"]), "num_blocks": tuple(int(b) for b in s["num_blocks"]),
                           "num_channels": tuple(int(c) for c in s["num_channels"])})
        except (KeyError, TypeError, ValueError):
            raise ConversionError(f"HRNet stage{k} {dict(s)!r:.160} lacks num_modules / num_branches / block / "
                                  "num_blocks / num_channels") from None
    return stages


def hrnet_backbone_kwargs(bb: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[int]]:
    """``create_model`` keywords for an mmseg ``HRNet`` backbone dict, and its four branch widths."""
    _require(bb.get("type") == "HRNet", f"backbone type {bb.get('type')!r} is not HRNet")
    _require(bb.get("conv_cfg") is None, "HRNet conv_cfg is not supported (plain convolutions only)")
    _require(bool(bb.get("multiscale_output", True)), "HRNet multiscale_output=False is not supported")
    norm = (bb.get("norm_cfg") or {}).get("type", "BN")
    _require(norm in ("BN", "SyncBN"), f"HRNet norm_cfg type {norm!r} is not supported; supported: BN, SyncBN")
    stages = _stages(bb)
    last = stages[-1]
    _require([s["num_branches"] for s in stages] == [1, 2, 3, 4] and last["block"] in ("BASIC", "BOTTLENECK"),
             "HRNet stages must have 1, 2, 3, 4 branches")
    expansion = 4 if last["block"] == "BOTTLENECK" else 1
    widths = [c * expansion for c in last["num_channels"]]
    kw: Dict[str, Any] = {}
    for name, layout in _named_layouts().items():
        if layout == stages:
            kw["backbone"] = name
            break
    else:
        kw.update(backbone="hrnet_w18", backbone_kw={"stages": stages})
    if int(bb.get("in_channels", 3)) != 3:
        kw["in_chans"] = int(bb["in_channels"])
    return kw, widths


def _check_input(dh: Mapping[str, Any], widths: Sequence[int]) -> None:
    kind = dh.get("type")
    _require(dh.get("input_transform") == "resize_concat" and tuple(dh.get("in_index", ())) == (0, 1, 2, 3),
             f"{kind} on HRNet: only input_transform='resize_concat' with in_index (0, 1, 2, 3) is supported, got "
             f"{dh.get('input_transform')!r} / {dh.get('in_index')!r}")
    _require(list(dh.get("in_channels", [])) == list(widths),
             f"{kind} in_channels {dh.get('in_channels')!r} do not match the HRNet branch widths {list(widths)}")


def _dropout(dh: Mapping[str, Any]) -> float:
    return max(float(dh.get("dropout_ratio", 0.1)), 0.0)


def _fcn_layout(dh: Mapping[str, Any]) -> Tuple[int, int, bool]:
    num_convs, k = int(dh.get("num_convs", 2)), int(dh.get("kernel_size", 3))
    concat = bool(dh.get("concat_input", True))
    _require(dh.get("type") == "FCNHead" and num_convs in (1, 2) and k in (1, 3) and int(dh.get("dilation", 1)) == 1,
             f"FCNHead on HRNet: num_convs 1 or 2, kernel_size 1 or 3, dilation 1 are supported, got {dict(dh)!r:.200}")
    return num_convs, k, concat


def _heads(model: Mapping[str, Any], widths: Sequence[int]) -> Tuple[str, Dict[str, Any], Mapping[str, Any]]:
    """Model name, keywords and the (last) decode head of an FCN-HRNet or OCRNet-HRNet config."""
    _require(model.get("auxiliary_head") is None,
             "HRNet models with an auxiliary_head are not supported (mmseg's HRNet configs have none)")
    if model.get("type") == "EncoderDecoder":
        dh = model.get("decode_head")
        _require(isinstance(dh, Mapping) and dh.get("type") == "FCNHead",
                 f"decode head {getattr(dh, 'get', lambda _: dh)('type')!r} on HRNet is not supported; supported: "
                 "FCNHead (FCN-HRNet), [FCNHead, OCRHead] (OCRNet-HRNet)")
        _check_input(dh, widths)
        num_convs, k, concat = _fcn_layout(dh)
        return "fcn", {"channels": int(dh["channels"]), "num_convs": num_convs, "kernel_size": k,
                       "concat_input": concat, "dropout": _dropout(dh), "aux": False}, dh
    heads = model.get("decode_head")
    ok = isinstance(heads, (list, tuple)) and len(heads) == 2 == int(model.get("num_stages", 2))
    _require(ok and all(isinstance(h, Mapping) for h in heads) and heads[1].get("type") == "OCRHead",
             "CascadeEncoderDecoder on HRNet: only OCRNet's two stages [FCNHead, OCRHead] are supported")
    fcn, ocr = heads
    for dh in heads:
        _check_input(dh, widths)
    num_convs, k, concat = _fcn_layout(fcn)
    _require(num_convs == 1 and not concat and fcn.get("num_classes") == ocr.get("num_classes"),
             "OCRNet's first stage must be an FCNHead with num_convs=1, concat_input=False and the OCRHead's "
             f"num_classes, got {dict(fcn)!r:.200}")
    _require(int(ocr.get("scale", 1)) == 1, "OCRHead: scale != 1 is not supported")
    loss = fcn.get("loss_decode")
    weight = float(loss.get("loss_weight", 0.4)) if isinstance(loss, Mapping) else 0.4
    return "ocrnet", {"channels": int(ocr["channels"]), "ocr_channels": int(ocr["ocr_channels"]),
                      "dropout": _dropout(ocr), "aux": True, "region_channels": int(fcn["channels"]),
                      "region_kernel": k, "region_dropout": _dropout(fcn), "region_weight": weight}, ocr


def hrnet_architecture(cfg: Mapping[str, Any], dataset_meta: Optional[Mapping[str, Any]] = None) -> MmsegArchitecture:
    """The segattn equivalent of an mmseg config whose backbone is ``HRNet`` (FCN or OCRNet)."""
    model = cfg["model"]
    _require(model.get("type") in ("EncoderDecoder", "CascadeEncoderDecoder"),
             f"segmentor type {model.get('type')!r} is not supported with HRNet")
    kwargs, widths = hrnet_backbone_kwargs(model.get("backbone") or {})
    name, head_kw, dh = _heads(model, widths)
    kwargs.update(head_kw)
    kwargs["align_corners"] = bool(dh.get("align_corners", False))
    num_classes = int(dh["num_classes"])
    ev = eval_settings(model, cfg)
    mean, std, rgb, where = normalisation(cfg)
    _require(rgb, f"BGR input ({where}) is not supported for HRNet models; supported: RGB input")
    dataset_type = cfg.get("dataset_type") or get(cfg, "test_dataloader.dataset.type") or get(cfg, "data.test.type")
    crop = cfg.get("crop_size")
    if dataset_meta and dataset_meta.get("classes") is not None:
        _require(len(dataset_meta["classes"]) == num_classes,
                 f"dataset_meta has {len(dataset_meta['classes'])} classes but the decode head {num_classes}")
    return MmsegArchitecture(
        head=str(dh["type"]), name=name, num_classes=num_classes, kwargs=kwargs, eval=ev,
        mean=[float(m) for m in mean], std=[float(v) for v in std],
        dataset=DATASETS.get(str(dataset_type)) if dataset_type else None,
        crop_size=list(crop) if isinstance(crop, (list, tuple)) else None)


_CONV_MODULE = [(re.compile(r"\.conv\.(weight|bias)$"), r".0.\1"),
                (re.compile(r"\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)$"), r".1.\1")]


def _head_key(key: str, rules: Sequence[Tuple[str, str]]) -> str:
    """An mmseg head key (``ConvModule`` ``.conv`` / ``.bn`` collapsed) renamed by the first prefix rule."""
    for pattern, repl in _CONV_MODULE:
        key = pattern.sub(repl, key)
    for old, new in rules:
        if key == old or key.startswith(old + "."):
            return new + key[len(old):]
    return key


def convert_hrnet_state_dict(state_dict: Mapping[str, Tensor], arch: MmsegArchitecture) -> StateDict:
    """mmseg keys and tensors of an FCN- / OCRNet-HRNet checkpoint -> the segattn model's."""
    rules = list(HEADS[arch.head].rules) + [("conv_seg", "cls.1")]
    out: StateDict = {}
    leftovers = []
    for key, value in state_dict.items():
        if key.startswith("backbone."):
            out[key] = value  # the same names (see segattn.models.backbones.hrnet)
        elif key.startswith("decode_head."):
            out["head." + _head_key(key[len("decode_head."):], rules)] = value
        else:
            leftovers.append(key)
    _require(any(k.startswith("backbone.") for k in out), "the checkpoint has no backbone.* tensors")
    _require(not leftovers, f"the checkpoint has tensors outside backbone / decode_head: {leftovers[:5]}")
    return out


__all__ = ["convert_hrnet_state_dict", "hrnet_architecture", "hrnet_backbone_kwargs"]
