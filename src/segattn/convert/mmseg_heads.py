"""The decode heads the mmseg converter knows: segattn keywords, key renames and exact tensor fixes.

One :class:`HeadSpec` per mmseg head type in :data:`HEADS` (the table of differences is in
:mod:`segattn.convert.mmseg`); :data:`MULTI_INPUT` lists the heads that read several backbone stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch

from segattn.convert.mmseg_read import StateDict
from segattn.convert.mmseg_read import require as _require

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
    _check(dh, num_convs=2, concat_input=True, kernel_size=3)
    dilation = int(dh.get("dilation", 1))
    return "fcn", ({"dilation": dilation} if dilation != 1 else {})


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


def head_kwargs(dh: Mapping[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """``(segattn model name, keywords)`` of an mmseg decode head config; a ConversionError naming what differs."""
    from segattn.convert.mmseg_read import ConversionError

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


def psa_rules(kind: str) -> Rules:
    """PSAHead's renames (its branches depend on ``psa_type``)."""
    return _psa_rules(kind)


__all__ = ["HEADS", "MULTI_INPUT", "HeadSpec", "Rules", "head_kwargs", "psa_rules"]
