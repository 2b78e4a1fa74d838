"""mmsegmentation checkpoints -> segattn models, without mmcv or mmseg.

An mmseg checkpoint (0.x or 1.x) is read as data only (:mod:`segattn.convert.mmseg_read`); the
architecture comes from the checkpoint's own merged config (``meta["cfg"]``, mmcv 1.x
``meta["config"]``), of which only the parts the converter needs are evaluated, never executed;
``config=`` gives a merged config file that replaces it. :mod:`segattn.convert.mmseg_arch` maps the
config onto a segattn model, :mod:`segattn.convert.mmseg_heads` holds the per-head tables, and this
module converts the tensors and writes the folder.

What converts (``EncoderDecoder``, ``ResNetV1c`` or plain ``ResNet`` of depth 18 / 34 / 50 / 101 at
output stride 8 or 16, auxiliary ``FCNHead`` on stage 3 or none) and how each decode head maps onto a segattn model:

============  ==========  =====================================================================
mmseg head    segattn     exact differences handled here
============  ==========  =====================================================================
FCNHead       fcn         renames only (``num_convs=2``, ``concat_input=True``; ``dilation`` as the FCN-D6
                          models)
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
error naming the keys); the tests compare logits with mmseg 1.2.2's and 0.30's in float64. A model
that took BGR images (``to_rgb=False``) gets its first conv's input channels reversed: segattn models
take RGB.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from segattn.checkpoints.resnet import remap_resnet_state_dict
from segattn.convert.mmconfig import ConfigError
from segattn.convert.mmseg_arch import DATASETS, MmsegArchitecture
from segattn.convert.mmseg_arch import architecture_from_config as _resnet_architecture
from segattn.convert.mmseg_heads import HEADS, Rules, psa_rules
from segattn.convert.mmseg_hrnet import convert_hrnet_state_dict, hrnet_architecture
from segattn.convert.mmseg_read import (
    ConversionError,
    MmsegCheckpoint,
    PathLike,
    StateDict,
    read_config,
    read_mmseg_checkpoint,
)
from segattn.convert.mmseg_read import require as _require

ConfigArg = Union[None, PathLike, Mapping[str, Any]]


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




def architecture_from_config(cfg: Mapping[str, Any], dataset_meta: Optional[Mapping[str, Any]] = None) -> MmsegArchitecture:
    """The segattn equivalent of a parsed mmseg config (``parse_config`` output): HRNet backbones through
    :func:`segattn.convert.mmseg_hrnet.hrnet_architecture`, ResNets through
    :func:`segattn.convert.mmseg_arch.architecture_from_config`; :class:`ConversionError` naming the
    unsupported part and what is supported otherwise."""
    model = cfg.get("model")
    if isinstance(model, Mapping) and isinstance(model.get("backbone"), Mapping) and model["backbone"].get("type") == "HRNet":
        return hrnet_architecture(cfg, dataset_meta)
    return _resnet_architecture(cfg, dataset_meta)


def convert_state_dict(state_dict: Mapping[str, Tensor], arch: MmsegArchitecture, dh: Mapping[str, Any]) -> StateDict:
    """mmseg keys and tensors -> the segattn model's (backbone, decode head, auxiliary head)."""
    if str(arch.kwargs.get("backbone", "")).startswith("hrnet"):
        return convert_hrnet_state_dict(state_dict, arch)
    backbone = {k: v for k, v in state_dict.items() if k.startswith("backbone.")}
    _require(bool(backbone), "the checkpoint has no backbone.* tensors")
    bb, _, _ = remap_resnet_state_dict(backbone)
    out: StateDict = {f"backbone.{k}": v for k, v in bb.items()}
    if arch.bgr_input:  # the model took BGR: reverse the first conv's input channels (exact)
        out["backbone.stem.0.0.weight"] = out["backbone.stem.0.0.weight"].flip(1)
    spec = HEADS[arch.head]
    if isinstance(dh, (list, tuple)):  # CascadeEncoderDecoder: the last stage is the head
        dh = dh[-1]
    rules = spec.rules or psa_rules(str(dh.get("psa_type", "bi-direction")))
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
def from_mmseg(checkpoint: PathLike, config: ConfigArg = None, *,
               fallback_config: Optional[Mapping[str, Any]] = None) -> torch.nn.Module:
    """The segattn model of an mmseg checkpoint, in eval mode.

    ``checkpoint`` is a local ``.pth`` written by mmseg (0.x or 1.x); ``config`` a merged mmseg config
    file (or an already parsed dict) that replaces the checkpoint's own (needed when it carries none).
    ``fallback_config`` (a parsed config, e.g. the zoo manifest's copy) is used when ``config`` is not
    given and the checkpoint has no readable config (with a note). The model's ``pretrained_config`` holds what :func:`save_mmseg` writes:
    classes and palette (the checkpoint's meta, else the dataset's built-in list), normalisation,
    eval settings (whole / slide with crop and stride) and the source; ``model.mmseg_architecture`` the
    parsed :class:`MmsegArchitecture`; ``model.mmseg_notes`` what was dropped or changed on the way
    (also given as a warning).
    """
    ckpt = read_mmseg_checkpoint(checkpoint)
    if config is None and ckpt.config_text is None:
        config = fallback_config
    try:
        cfg = read_config(config, ckpt)
    except ConfigError as err:
        if config is not None or fallback_config is None:
            raise
        ckpt.notes.append(f"the checkpoint's own config was not readable ({err}); used the zoo manifest's copy")
        cfg = read_config(fallback_config, ckpt)
    arch = architecture_from_config(cfg, ckpt.dataset_meta)
    model = arch.build()
    state = convert_state_dict(ckpt.state_dict, arch, cfg["model"]["decode_head"])
    load_converted(model, state)
    model.mmseg_architecture = arch
    model.mmseg_notes = ckpt.notes + arch.notes
    model.pretrained_config = _card(arch, ckpt.dataset_meta, source=os.path.basename(os.fspath(checkpoint)))
    for note in model.mmseg_notes:
        warnings.warn(note, stacklevel=2)
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


__all__ = ["ConversionError", "DATASETS", "MmsegArchitecture", "MmsegCheckpoint", "architecture_from_config",
           "convert_state_dict", "from_mmseg", "read_mmseg_checkpoint", "save_mmseg", "HEADS"]
