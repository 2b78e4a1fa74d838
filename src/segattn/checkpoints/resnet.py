"""Key remapping and loading for ResNet backbones (torchvision, timm, mmseg/mmcv, segattn).

Files are read by :func:`segattn.checkpoints.reading.read_checkpoint`. No foreign library is
imported: the layouts are recognised from the key names.

Layouts understood (all map onto :class:`segattn.models.backbones.resnet.ResNet`):

==============  ==================================================  ==================================
layout          stem keys                                           source
==============  ==================================================  ==================================
``plain``       ``conv1.weight``, ``bn1.*``                         torchvision, timm ``resnetN``,
                                                                    mmcv ``ResNet`` (pytorch style)
``timm_deep``   ``conv1.0/.1/.3/.4/.6``, ``bn1.*``                  timm ``resnetNc`` / ``resnetNd``
``mmseg_deep``  ``stem.0/.1/.3/.4/.6/.7``                           mmcv/mmseg ``ResNetV1c/V1d``
``segattn``     ``stem.<i>.0``, ``stem.<i>.1``                      this library
==============  ==================================================  ==================================

Blocks (``layerN.i.conv1/bn1/.../downsample.*``) share one layout everywhere. Prefixes ``module.``
(DDP), ``backbone.`` (mmseg segmentor checkpoints: other heads are reported as ignored) and
``encoder.`` (smp) are stripped; classifier keys ``fc.*`` are ignored.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Tuple

from torch import Tensor, nn

from segattn.checkpoints.reading import Source, StateDict, read_checkpoint

_TIMM_DEEP = {"conv1.0": "stem.0.0", "conv1.1": "stem.0.1", "conv1.3": "stem.1.0", "conv1.4": "stem.1.1",
              "conv1.6": "stem.2.0", "bn1": "stem.2.1"}
_MMSEG_DEEP = {"stem.0": "stem.0.0", "stem.1": "stem.0.1", "stem.3": "stem.1.0", "stem.4": "stem.1.1",
               "stem.6": "stem.2.0", "stem.7": "stem.2.1"}
_PLAIN = {"conv1": "stem.0.0", "bn1": "stem.0.1"}


@dataclass
class LoadReport:
    """What a backbone checkpoint load did; ``str(report)`` is a readable summary."""

    layout: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"checkpoint layout {self.layout!r}: loaded {len(self.loaded)} tensors"]
        for title, keys in (("missing in checkpoint", self.missing), ("unexpected in checkpoint", self.unexpected)):
            if keys:
                lines.append(f"{len(keys)} {title}: " + ", ".join(_abbrev(keys)))
        if self.mismatched:
            items = [f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" for k, a, b in self.mismatched[:10]]
            lines.append(f"{len(self.mismatched)} shape mismatches: " + ", ".join(items))
        if self.ignored:
            lines.append(f"{len(self.ignored)} ignored (classifier / non-backbone): " + ", ".join(_abbrev(self.ignored)))
        return "\n".join(lines + self.notes)


def _abbrev(keys: List[str], n: int = 12) -> List[str]:
    return keys[:n] + ([f"... (+{len(keys) - n} more)"] if len(keys) > n else [])


def detect_layout(keys: List[str]) -> str:
    """Name of the stem layout of a ResNet state dict (see the module docstring)."""
    ks = set(keys)
    if "stem.0.0.weight" in ks:
        return "segattn"
    if "stem.0.weight" in ks:
        return "mmseg_deep"
    if "conv1.0.weight" in ks:
        return "timm_deep"
    if "conv1.weight" in ks:
        return "plain"
    raise ValueError("not a ResNet checkpoint: no stem keys (conv1.weight, conv1.0.weight, stem.0.weight); "
                     f"first keys: {sorted(ks)[:8]}")


def _strip_prefixes(sd: StateDict) -> Tuple[StateDict, List[str]]:
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    for prefix in ("backbone.", "encoder."):
        if any(k.startswith(prefix) for k in sd):
            kept = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            return kept, sorted(k for k in sd if not k.startswith(prefix))
    return sd, []


def _rename(key: str, table: Dict[str, str]) -> str:
    for old, new in table.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    return key


def remap_resnet_state_dict(state_dict: Mapping[str, Tensor]) -> Tuple[StateDict, str, List[str]]:
    """Return ``(segattn_state_dict, layout, ignored_keys)`` for a foreign ResNet state dict."""
    sd, ignored = _strip_prefixes(dict(state_dict))
    layout = detect_layout(list(sd))
    table = {"plain": _PLAIN, "timm_deep": _TIMM_DEEP, "mmseg_deep": _MMSEG_DEEP, "segattn": {}}[layout]
    out: StateDict = {}
    for k, v in sd.items():
        if k.startswith("fc.") or k.startswith("head."):
            ignored.append(k)
        else:
            out[_rename(k, table)] = v
    return out, layout, sorted(ignored)


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """Fit a first-conv weight (O, 3, k, k) to ``in_chans`` inputs (sum for 1, tiled and rescaled otherwise)."""
    if weight.shape[1] == in_chans:
        return weight
    if in_chans == 1:
        return weight.sum(1, keepdim=True)
    reps = -(-in_chans // weight.shape[1])
    tiled = weight.repeat(1, reps, 1, 1)[:, :in_chans]
    return tiled * (weight.shape[1] / in_chans)


def load_backbone_weights(model: nn.Module, source: Source, strict: bool = False, verbose: bool = True) -> LoadReport:
    """Load a torchvision / timm / mmseg / segattn ResNet checkpoint into ``model`` with key remapping.

    Tensors whose shape differs are skipped and listed (the first conv is adapted when only its input
    channels differ). ``strict=True`` raises ``RuntimeError`` with the report if anything is missing,
    unexpected or mismatched; otherwise a warning carries the report when the load was not clean.
    """
    sd, layout, ignored = remap_resnet_state_dict(read_checkpoint(source))
    own = model.state_dict()
    report = LoadReport(layout=layout, ignored=ignored)
    usable: StateDict = {}
    for k, v in sd.items():
        if k not in own:
            report.unexpected.append(k)
            continue
        if k == "stem.0.0.weight" and v.dim() == 4 and v.shape[1] != own[k].shape[1]:
            v = adapt_input_conv(v, own[k].shape[1])
        if tuple(v.shape) != tuple(own[k].shape):
            report.mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
            continue
        usable[k] = v
    report.missing = sorted(k for k in own if k not in usable and not k.endswith("num_batches_tracked")
                            and k not in {m[0] for m in report.mismatched})
    report.loaded = sorted(usable)
    stem_deep = "stem.1.0.weight" in own
    if any(k.startswith("stem.") for k in report.missing) and layout != "segattn":
        want, have = ("deep (V1c)", "plain 7x7") if stem_deep else ("plain 7x7", "deep")
        report.notes.append(f"hint: the checkpoint has a {have} stem but the model a {want} stem; "
                            "choose the backbone variant that matches (resnetN = plain, resnetNc/resnetNd = deep)")
    if strict and not report.ok:
        raise RuntimeError(f"backbone checkpoint does not match the model:\n{report}")
    model.load_state_dict(usable, strict=False)
    if verbose and not report.ok:
        warnings.warn(f"backbone weights loaded with differences:\n{report}", stacklevel=2)
    return report


__all__ = ["LoadReport", "adapt_input_conv", "detect_layout", "load_backbone_weights", "remap_resnet_state_dict"]
