"""HRNet (HRNetV2, Wang et al., TPAMI 2020) as mmsegmentation configures it: W18-Small, W18, W48.

Shapes for an input (B, 3, H, W)::

    stem     conv1 3x3/2 -> BN -> ReLU -> conv2 3x3/2 -> BN -> ReLU           (B, 64, H/4, W/4)
    layer1   Bottleneck x n1 (64 -> 256)                                      (B, 256, H/4, W/4)
    stage k  (k = 2, 3, 4): ``transition{k-1}`` adds branch k (3x3/2 conv on the lowest-resolution
             branch; existing branches whose width changes get a 3x3 conv), then ``num_modules``
             HRModules: BasicBlocks per branch, then every branch i sums all branches j:
               j > i: 1x1 conv + BN, bilinear x 2**(j-i) (``align_corners=False``), then bilinear to
                      branch i's size when the two differ (odd input sizes), as mmseg's HRModule
               j < i: (i - j) 3x3/2 conv + BN (ReLU between them)
             and applies ReLU.
    output   four maps (B, C_b, H/4, W/4), (B, 2 C_b, H/8, W/8), (B, 4 C_b, H/16, W/16),
             (B, 8 C_b, H/32, W/32) with C_b = 18 (W18, W18-Small) or 48 (W48); sizes rounded up
             at each stride-2 conv.

The heads that mmseg puts on HRNet read :class:`ResizeConcat` of the four maps, (B, 15 C_b, H/4, W/4)
(mmseg's ``input_transform='resize_concat'``); :func:`segattn.models.factory.build_segmentor` inserts it.

Parameter names are those of mmseg's / the official HRNet (``conv1``, ``bn1``, ``layer1.0.conv1``,
``transition1.1.0.0``, ``stage2.0.branches.0.0.conv1``, ``stage2.0.fuse_layers.0.1.0``...), so mmseg
segmentation checkpoints and the ImageNet ``hrnetv2_w18``-style files load with the key names as they are
(missing transitions / fuse entries are parameter-free ``nn.Identity``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.layers import BatchNorm2d, init_conv_bn_
from segattn.models.backbones.resnet import BasicBlock, Bottleneck, FeatureInfo
from segattn.registry import BACKBONES

BLOCKS: Dict[str, type] = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}

StageSpec = Dict[str, Any]


def hrnet_stages(width: int, small: bool = False) -> List[StageSpec]:
    """mmseg's ``extra`` dict as a list of four stage specs (``num_modules``, ``num_branches``,
    ``block``, ``num_blocks``, ``num_channels``): HRNetV2-W``width`` (``small``: W18-Small's depths)."""
    n = 2 if small else 4
    modules = (1, 1, 3, 2) if small else (1, 1, 4, 3)
    stages = [{"num_modules": 1, "num_branches": 1, "block": "BOTTLENECK", "num_blocks": (n,), "num_channels": (64,)}]
    for k in (2, 3, 4):
        stages.append({"num_modules": modules[k - 1], "num_branches": k, "block": "BASIC",
                       "num_blocks": (n,) * k, "num_channels": tuple(width * 2**b for b in range(k))})
    return stages


VARIANTS: Dict[str, Tuple[int, bool]] = {"hrnet_w18_small": (18, True), "hrnet_w18": (18, False),
                                         "hrnet_w48": (48, False)}


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, relu: bool = False) -> nn.Sequential:
    layers: List[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False), BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


def _blocks(block: type, cin: int, planes: int, n: int) -> nn.Sequential:
    """``n`` blocks of ``planes``; a 1x1 conv + BN shortcut on the first one when the width changes."""
    cout = planes * block.expansion
    down = _conv_bn(cin, cout, 1) if cin != cout else None
    return nn.Sequential(*[block(cin if i == 0 else cout, planes, 1, 1, 1, down if i == 0 else None)
                           for i in range(n)])


def _check_stage(spec: Mapping[str, Any], k: int) -> StageSpec:
    """A stage spec with tuples and validated lengths (``ValueError`` naming the stage otherwise)."""
    try:
        out = {"num_modules": int(spec["num_modules"]), "num_branches": int(spec["num_branches"]),
               "block": str(spec["block"]), "num_blocks": tuple(int(b) for b in spec["num_blocks"]),
               "num_channels": tuple(int(c) for c in spec["num_channels"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"HRNet stage{k}: expected num_modules, num_branches, block, num_blocks, num_channels; "
                         f"got {dict(spec)!r:.200} ({exc})") from None
    nb = out["num_branches"]
    if out["block"] not in BLOCKS:
        raise ValueError(f"HRNet stage{k}: block {out['block']!r} is not one of {sorted(BLOCKS)}")
    if len(out["num_blocks"]) != nb or len(out["num_channels"]) != nb or out["num_modules"] < 1:
        raise ValueError(f"HRNet stage{k}: num_blocks {out['num_blocks']} and num_channels {out['num_channels']} "
                         f"must have num_branches = {nb} entries and num_modules must be >= 1")
    if (k == 1 and nb != 1) or min(out["num_blocks"] + out["num_channels"]) < 1:
        raise ValueError(f"HRNet stage{k}: stage1 has one branch; every block count and width must be >= 1, "
                         f"got {out}")
    return out


class HRModule(nn.Module):
    """One multi-resolution module: ``branches`` (blocks per resolution) then ``fuse_layers``.

    Input and output: a list of ``len(num_channels)`` maps, branch ``b`` at stride 4 * 2**b.
    """

    def __init__(self, block: type, num_blocks: Sequence[int], in_channels: Sequence[int],
                 num_channels: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(_blocks(block, cin, planes, n)
                                      for cin, planes, n in zip(in_channels, num_channels, num_blocks))
        width = [c * block.expansion for c in num_channels]
        self.out_channels = width
        nb = len(width)
        rows: List[nn.ModuleList] = []
        for i in range(nb if nb > 1 else 0):
            row: List[nn.Module] = []
            for j in range(nb):
                if j > i:  # 1x1 conv + BN; upsampled in forward
                    row.append(_conv_bn(width[j], width[i], 1))
                elif j == i:
                    row.append(nn.Identity())
                else:  # (i - j) stride-2 3x3 convs; the last one changes the width and has no ReLU
                    steps = [_conv_bn(width[j], width[j], 3, 2, relu=True) for _ in range(i - j - 1)]
                    row.append(nn.Sequential(*steps, _conv_bn(width[j], width[i], 3, 2)))
            rows.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(rows) if rows else None
        self.relu = nn.ReLU(inplace=False)

    @staticmethod
    def upsample(y: Tensor, factor: int, size: Sequence[int]) -> Tensor:
        """mmseg's fuse upsampling: bilinear x ``factor`` (the same coordinates as mmseg's resize to
        ``factor`` x the size), then bilinear to ``size`` (an exact copy where the sizes agree; always
        applied, so that a traced or exported model follows the input size)."""
        y = F.interpolate(y, scale_factor=float(factor), mode="bilinear", align_corners=False)
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)

    def forward(self, xs: List[Tensor]) -> List[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out: List[Tensor] = []
        for i, row in enumerate(self.fuse_layers):
            size = xs[i].shape[-2:]
            total: Optional[Tensor] = None
            for j, layer in enumerate(row):  # summed in mmseg's order (j = 0, 1, ...)
                if j == i:
                    term = xs[j]
                elif j > i:
                    term = self.upsample(layer(xs[j]), 2 ** (j - i), size)
                else:
                    term = layer(xs[j])
                total = term if total is None else total + term
            assert total is not None
            out.append(self.relu(total))
        return out


class HRNet(nn.Module):
    """HRNetV2 backbone returning its four branch outputs (see the module docstring for the shapes).

    Args:
        stages: four stage specs as mmseg's ``extra`` (``stage1``..``stage4``; :func:`hrnet_stages`).
        in_chans: input channels.
        out_indices: which branches to return (0 = stride 4, ..., 3 = stride 32).
        output_stride: accepted for the segmentor's common keywords only: ``None`` or 4 (the stride
            the heads read); HRNet's branches keep strides 4-32 whatever is asked.
        pretrained: a local ImageNet HRNet checkpoint (mmcv ``open-mmlab://msra/hrnetv2_w18`` style,
            the official classification file, an mmseg segmentation checkpoint's ``backbone.*`` or a
            segattn state dict): see :func:`load_hrnet_weights`. Never fetched implicitly.
    """

    #: the heads read the resized concatenation of all branches (mmseg ``input_transform='resize_concat'``)
    resize_concat = True

    def __init__(self, stages: Sequence[Mapping[str, Any]], *, in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3), output_stride: Optional[int] = None,
                 pretrained: Optional[str] = None) -> None:
        super().__init__()
        if len(stages) != 4:
            raise ValueError(f"HRNet needs four stage specs (stage1..stage4), got {len(stages)}")
        if output_stride not in (None, 4):
            raise ValueError(f"HRNet keeps all four resolutions and its heads read stride 4; output_stride must "
                             f"be left unset (or 4), got {output_stride!r}")
        specs = [_check_stage(s, k) for k, s in enumerate(stages, 1)]
        self.stages_spec = specs
        self.in_chans = in_chans
        self.conv1, self.bn1 = nn.Conv2d(in_chans, 64, 3, 2, 1, bias=False), BatchNorm2d(64)
        self.conv2, self.bn2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False), BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        block = BLOCKS[specs[0]["block"]]
        self.layer1 = _blocks(block, 64, specs[0]["num_channels"][0], specs[0]["num_blocks"][0])
        widths = [specs[0]["num_channels"][0] * block.expansion]
        for k in (2, 3, 4):
            spec = specs[k - 1]
            block = BLOCKS[spec["block"]]
            want = [c * block.expansion for c in spec["num_channels"]]
            self.add_module(f"transition{k - 1}", self._transition(widths, want))
            modules = []
            cin = list(want)
            for _ in range(spec["num_modules"]):
                modules.append(HRModule(block, spec["num_blocks"], cin, spec["num_channels"]))
                cin = modules[-1].out_channels
            self.add_module(f"stage{k}", nn.Sequential(*modules))
            widths = cin
        n = len(widths)
        if not out_indices or any(i not in range(n) for i in out_indices):
            raise ValueError(f"HRNet out_indices must lie in 0..{n - 1} (branches), got {tuple(out_indices)}")
        self.out_indices = tuple(out_indices)
        info = [{"num_chs": c, "reduction": 4 * 2**b, "module": "stage4"} for b, c in enumerate(widths)]
        self.feature_info = FeatureInfo(info, self.out_indices)
        self._init_weights()
        if pretrained:
            load_hrnet_weights(self, pretrained)

    @staticmethod
    def _transition(pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
        """Branch i keeps its map (Identity) or changes width (3x3 conv); new branches come from the
        last one through stride-2 3x3 convs (the last of them sets the width)."""
        layers: List[nn.Module] = []
        for i, c in enumerate(cur):
            if i < len(pre):
                layers.append(_conv_bn(pre[i], c, 3, relu=True) if pre[i] != c else nn.Identity())
            else:
                steps = i + 1 - len(pre)
                layers.append(nn.Sequential(*[_conv_bn(pre[-1], c if s == steps - 1 else pre[-1], 3, 2, relu=True)
                                              for s in range(steps)]))
        return nn.ModuleList(layers)

    def _init_weights(self) -> None:
        init_conv_bn_(self)

    def forward(self, x: Tensor) -> List[Tensor]:
        if x.dim() != 4:
            raise ValueError(f"HRNet expects a (B, C, H, W) image batch, got shape {tuple(x.shape)}")
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for k in (2, 3, 4):
            transition: nn.ModuleList = getattr(self, f"transition{k - 1}")
            xs = [t(ys[i] if i < len(ys) else ys[-1]) for i, t in enumerate(transition)]
            ys = getattr(self, f"stage{k}")(xs)
        return [ys[i] for i in self.out_indices]


class ResizeConcat(nn.Module):
    """mmseg's ``input_transform='resize_concat'``: every map resized (bilinear) to the first one's size
    and concatenated, (B, sum C_i, h_0, w_0); returned ``len(feats)`` times so that heads indexing any
    level (``feats[-1]``, the auxiliary ``feats[2]``) read it."""

    def __init__(self, align_corners: bool = False) -> None:
        super().__init__()
        self.align_corners = align_corners

    def forward(self, feats: List[Tensor]) -> List[Tensor]:
        size = feats[0].shape[-2:]  # no size comparison: an exported model follows the input size
        cat = feats[:1] + [F.interpolate(f, size=size, mode="bilinear", align_corners=self.align_corners)
                           for f in feats[1:]]
        y = cat[0] if len(cat) == 1 else torch.cat(cat, dim=1)
        return [y] * len(feats)


#: keys of the ImageNet classification files that the segmentation backbone does not use
CLASSIFIER_PARTS = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.", "fc.")


def hrnet_state_dict(state: Mapping[str, Tensor]) -> Tuple[Dict[str, Tensor], List[str]]:
    """An HRNet backbone state dict from an ImageNet or segmentation checkpoint's tensors: the
    ``state_dict`` / ``backbone.`` / ``module.`` prefixes dropped, the classification head (``incre_modules``,
    ``downsamp_modules``, ``final_layer``, ``classifier``) set aside; returns ``(state, ignored keys)``."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # type: ignore[assignment]
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if any(k.startswith("backbone.") for k in tensors):
        tensors = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
    out: Dict[str, Tensor] = {}
    ignored: List[str] = []
    for key, value in tensors.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(CLASSIFIER_PARTS):
            ignored.append(key)
        else:
            out[key] = value
    return out, ignored


def load_hrnet_weights(model: HRNet, path: str) -> List[str]:
    """Load a local HRNet checkpoint into ``model`` (every backbone tensor required, equal shapes);
    returns the classification-head keys it ignored. ``ValueError`` naming the keys otherwise."""
    from segattn.io import safe_torch_load

    raw = safe_torch_load(path, what="HRNet checkpoint")
    if not isinstance(raw, Mapping):
        raise ValueError(f"HRNet checkpoint {path!r}: expected a dict of tensors, got {type(raw).__name__}")
    state, ignored = hrnet_state_dict(raw)
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))  # old files
    unexpected = sorted(k for k in state if k not in own)
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state
              and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"HRNet checkpoint {path!r} does not fit this HRNet (pick hrnet_w18 / hrnet_w48 / "
                         f"hrnet_w18_small to match it): missing {missing[:4]}, unexpected {unexpected[:4]}, "
                         f"other shapes (key, file, model) {shapes[:3]}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
    return ignored


def _register(name: str, width: int, small: bool) -> None:
    def factory(*, stages: Optional[Sequence[Mapping[str, Any]]] = None, **kwargs: Any) -> HRNet:
        return HRNet(stages or hrnet_stages(width, small), **kwargs)

    factory.__name__ = name
    factory.__doc__ = (f"HRNetV2-W{width}{'-Small' if small else ''} (mmseg's ``{name}``); keywords: see "
                       ":class:`HRNet` (``stages=`` replaces the whole layout).")
    BACKBONES.register(name, width=width, small=small, form="HRNetV2 (mmseg)")(factory)


for _name, (_width, _small) in VARIANTS.items():
    _register(_name, _width, _small)
