"""Shared parts of the measurements: the measured module, forward hooks, logits, labels, accuracy
counts and pooled features (see :mod:`segattn.analyze.measure`)."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.analyze import metrics as M
from segattn.engine.evaluate import resize_by
from segattn.lowrank.mappers import EMMapper
from segattn.modules.base import ContextModule
from segattn.registry import MODULES

NAN = float("nan")
Batches = Sequence[Tuple[Tensor, Tensor]]
Log = Callable[[str], None]
NOISE_SIGMAS = (0.05, 0.1)  # input-noise std, as a fraction of the pixel range ([0, 1] images)
FGSM_EPS = (1 / 255, 2 / 255)  # FGSM step, same units
FEATURE_NOISE = 0.1  # module-input noise std as a fraction of the input's RMS
MAX_QUERIES = 256  # query pixels per image for the attention-map distances


# -------------------------------------------------------------------------------------- model parts
def context_slot(model: nn.Module) -> Optional[nn.Module]:
    """The module whose input/output are measured: ``model.head.context`` or the outermost context module."""
    head = getattr(model, "head", None)
    if head is not None and isinstance(getattr(head, "context", None), nn.Module):
        return head.context
    return next((m for m in model.modules() if isinstance(m, ContextModule)), None)


def module_name(module: Optional[nn.Module]) -> str:
    """Registered name of a context module ('identity' for ``nn.Identity``, '' for none)."""
    if module is None:
        return ""
    if isinstance(module, nn.Identity):
        return "identity"
    return next((n for n in MODULES.list() if type(module) is MODULES.get(n)), type(module).__name__)


def run_with_attention(module: nn.Module, x: Tensor) -> Dict[str, Tensor]:
    """Eval-mode, no-grad ``module(x, return_attention=True)`` factors (training flag restored)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(x, return_attention=True)
    finally:
        module.train(was_training)
    return out[1]


def em_mappers(model: nn.Module) -> List[nn.Module]:
    return [m for m in model.modules() if isinstance(m, EMMapper)]


@contextlib.contextmanager
def em_stages(model: nn.Module, stages: Optional[int]) -> Iterator[None]:
    """Temporarily run every EM mapper with ``stages`` iterations (None: unchanged)."""
    mappers = em_mappers(model)
    old = [m.num_stages for m in mappers]
    try:
        if stages is not None:
            for m in mappers:
                m.num_stages = int(stages)
        yield
    finally:
        for m, t in zip(mappers, old):
            m.num_stages = t


@contextlib.contextmanager
def em_gradient_cut(model: nn.Module) -> Iterator[None]:
    """EM iterations without autograd, as in training (``backprop_through_em=False``), while the rest of
    the model stays in eval mode and the bases are not updated (the mappers' momentum is switched off)."""
    mappers = [m for m in em_mappers(model) if not m.backprop]
    saved = [(m.training, m.momentum) for m in mappers]
    try:
        for m in mappers:
            m.training, m.momentum = True, None
        yield
    finally:
        for m, (tr, mom) in zip(mappers, saved):
            m.training, m.momentum = tr, mom


@contextlib.contextmanager
def _hooks(module: nn.Module, pre: Callable[..., Any], post: Callable[..., Any]) -> Iterator[None]:
    """``pre`` as a forward pre-hook and ``post`` as a forward hook of ``module`` inside the block."""
    handles = [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def capture(module: nn.Module) -> Iterator[Dict[str, Tensor]]:
    """Record ``module``'s first input (``"in"``) and output (``"out"``) of the forwards inside the block."""
    store: Dict[str, Tensor] = {}

    def pre(mod: nn.Module, args: Tuple[Any, ...]) -> None:
        store["in"] = args[0]

    def post(mod: nn.Module, args: Tuple[Any, ...], out: Any) -> None:
        store["out"] = out[0] if isinstance(out, tuple) else out

    with _hooks(module, pre, post):
        yield store


@contextlib.contextmanager
def at_eval_scale(model: nn.Module, scale: float) -> Iterator[nn.Module]:
    """Inside the block ``model(x)`` runs as the engine's single-scale whole-image evaluation does:
    x resized by ``scale`` (:func:`segattn.engine.evaluate.resize_by`), the logits (``"out"``) resized
    back to x's size (bilinear). Every measurement then sees the model at the input size it was
    evaluated at (CamVid's protocol: a third), while perturbations, gradients and accuracies stay in
    the validation images' own pixels. Scale 1 changes nothing."""
    if scale == 1.0:
        yield model
        return
    sizes: List[Tuple[int, int]] = []

    def pre(mod: nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
        sizes.append(tuple(args[0].shape[-2:]))
        return (resize_by(args[0], scale),) + tuple(args[1:])

    def post(mod: nn.Module, args: Tuple[Any, ...], out: Any) -> Any:
        size = sizes.pop()

        def back(t: Tensor) -> Tensor:
            return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

        return {**out, "out": back(out["out"])} if isinstance(out, dict) else back(out)

    with _hooks(model, pre, post):
        yield model


def logits_of(model: nn.Module, images: Tensor) -> Tensor:
    out = model(images)
    return out["out"] if isinstance(out, dict) else out


def labels_at(masks: Tensor, size: Tuple[int, int]) -> Tensor:
    """Masks (B, H, W) sampled at the pixel centres of a (h, w) grid (nearest), int64."""
    return F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0].long()


# ----------------------------------------------------------------------------------------- accuracy
class Confusion:
    """Dataset-level mIoU (percent) from accumulated per-class counts (the engine's definition)."""

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        self.k, self.ignore = num_classes, ignore_index
        self.tp = torch.zeros(num_classes, dtype=torch.float64)
        self.gt = torch.zeros(num_classes, dtype=torch.float64)
        self.pr = torch.zeros(num_classes, dtype=torch.float64)

    def add(self, pred: Tensor, target: Tensor) -> None:
        keep = (target != self.ignore) & (target >= 0) & (target < self.k)
        p, t = pred[keep].cpu().long().clamp(0, self.k - 1), target[keep].cpu().long()
        self.tp += torch.bincount(t[p == t], minlength=self.k).double()
        self.gt += torch.bincount(t, minlength=self.k).double()
        self.pr += torch.bincount(p, minlength=self.k).double()

    def miou(self) -> float:
        union = self.gt + self.pr - self.tp
        iou = self.tp[union > 0] / union[union > 0]
        return 100.0 * float(iou.mean()) if iou.numel() else NAN


def _cue_cells(images: Tensor, size: Tuple[int, int]) -> Tensor:
    """Synthetic set: fraction of each feature cell covered by the colour cue (pixels whose RGB
    channels differ; everything else in that set is grey), (B, h, w)."""
    rgb = images[:, :3]
    colour = ((rgb[:, 0] - rgb[:, 1]).abs() + (rgb[:, 1] - rgb[:, 2]).abs()) > 1e-3
    return F.adaptive_avg_pool2d(colour[:, None].float(), size)[:, 0]


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else NAN


POOLED_PER_IMAGE = 64  # foreground pixels per image kept for the pooled separation


class Pooled:
    """Features of up to 64 random foreground pixels (label not 0 / ignore) per image, pooled over images."""

    def __init__(self, ignore_index: int, seed: int = 0) -> None:
        self.ignore, self.gen = ignore_index, torch.Generator().manual_seed(seed)
        self.feats: List[Tensor] = []
        self.labels: List[Tensor] = []

    def add(self, feats: Tensor, lab: Tensor) -> None:
        """``feats`` (C, h, w) and ``lab`` (h, w) of one image."""
        flat, f = lab.reshape(-1), feats.reshape(feats.shape[0], -1)
        idx = torch.nonzero((flat != 0) & (flat != self.ignore))[:, 0]
        idx = idx[torch.randperm(len(idx), generator=self.gen)[:POOLED_PER_IMAGE]]
        self.feats.append(f[:, idx].detach().double().cpu())
        self.labels.append(flat[idx].cpu())

    def separation(self) -> float:
        """:func:`metrics.class_separation` of the pooled pixels (NaN with fewer than two classes)."""
        if not self.feats:
            return NAN
        return M.class_separation(torch.cat(self.feats, 1), torch.cat(self.labels), self.ignore)
