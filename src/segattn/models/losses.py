"""Segmentation losses with an ignore index: cross entropy (class weights), OHEM, Dice, Lovasz-softmax.

Every loss maps ``(logits (B, K, H, W), target (B, H, W) int64)`` to a scalar. Pixels whose target is
``ignore_index`` (255 by default, or a dataset's own) take no part. A batch whose pixels are all
ignored gives ``0`` (with a gradient of zeros), never NaN. A label that is neither a class of the logits
nor ignored raises ``ArgumentError`` naming it (one host sync per call); under ``torch.compile`` that
check is skipped and nothing else branches on values, so the losses trace. The per-pixel terms are
computed in float32.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import ANY, NON_NEGATIVE, UNIT, checked
from segattn.errors import ArgumentError
from segattn.modules.base import _is_compiling

LOSSES: Dict[str, Callable[..., nn.Module]] = {}


def _check(logits: Tensor, target: Tensor) -> None:
    if logits.dim() != 4 or target.dim() != 3:
        raise ValueError(f"expected logits (B, K, H, W) and target (B, H, W), got {tuple(logits.shape)} "
                         f"and {tuple(target.shape)}")
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in batch or size")
    if target.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
        raise TypeError(f"target must be an integer label map, got {target.dtype}")


class _SegLoss(nn.Module):
    @checked(ignore_index=ANY, class_weight=NON_NEGATIVE)
    def __init__(self, ignore_index: int = 255, class_weight: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
        self.register_buffer("class_weight", weight, persistent=False)

    def _check_inputs(self, logits: Tensor, target: Tensor) -> None:
        """Shapes and dtypes as :func:`_check`; ``class_weight`` must have one entry per class of ``logits``."""
        _check(logits, target)
        if self.class_weight is not None and self.class_weight.numel() != logits.shape[1]:
            raise ArgumentError(f"{type(self).__name__}: class_weight has {self.class_weight.numel()} entries but "
                                f"the logits have {logits.shape[1]} classes; give one weight per class")
        if not _is_compiling():
            self._check_labels(target, logits.shape[1])

    def _check_labels(self, target: Tensor, num_classes: int) -> None:
        """``ArgumentError`` naming the first label that is neither a class of the logits nor ignored
        (one reduction and one host sync per call; skipped under ``torch.compile``)."""
        bad = self._valid(target) & ((target < 0) | (target >= num_classes))
        if bool(bad.any()):
            value = int(target[bad][0])
            raise ArgumentError(f"{type(self).__name__}: the target holds label {value}, which is neither one of the "
                                f"logits' {num_classes} classes (0..{num_classes - 1}) nor the ignore index "
                                f"{self.ignore_index}; check the model's num_classes against the dataset's labels")

    def _valid(self, target: Tensor) -> Tensor:
        return target != self.ignore_index

    def _safe_target(self, target: Tensor) -> Tensor:
        return torch.where(self._valid(target), target.long(), torch.zeros_like(target, dtype=torch.long))

    def _pixel_weight(self, target: Tensor) -> Tensor:
        """Weight of each pixel: 0 where ignored, the class weight (or 1) elsewhere."""
        valid = self._valid(target).float()
        if self.class_weight is None:
            return valid
        return self.class_weight.to(target.device)[self._safe_target(target)] * valid

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"


class CrossEntropyLoss(_SegLoss):
    """Mean cross entropy over non-ignored pixels, class-weighted like ``F.cross_entropy`` (sum of
    weighted terms / sum of weights). ``label_smoothing`` as in torch."""

    @checked(ignore_index=ANY, class_weight=NON_NEGATIVE, label_smoothing=UNIT)
    def __init__(self, ignore_index: int = 255, class_weight: Optional[Sequence[float]] = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(ignore_index, class_weight)
        self.label_smoothing = label_smoothing

    def pixel_losses(self, logits: Tensor, target: Tensor) -> Tensor:
        """Unweighted per-pixel cross entropy (0 at ignored pixels)."""
        loss = F.cross_entropy(logits.float(), self._safe_target(target), reduction="none",
                               label_smoothing=self.label_smoothing)
        return loss * self._valid(target).float()

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        self._check_inputs(logits, target)
        w = self._pixel_weight(target)
        return (self.pixel_losses(logits, target) * w).sum() / w.sum().clamp_min(1e-12)


class OhemCrossEntropyLoss(CrossEntropyLoss):
    """Online hard example mining (mmseg ``OHEMPixelSampler`` / CCNet / OCNet): keep the pixels whose
    probability of the true class is below ``thresh`` (0.7); if fewer than ``min_kept`` (100000 in
    the references) qualify, raise the threshold to the ``min_kept``-th smallest probability."""

    @checked(ignore_index=ANY, class_weight=NON_NEGATIVE, thresh=UNIT, min_kept=NON_NEGATIVE)
    def __init__(self, ignore_index: int = 255, class_weight: Optional[Sequence[float]] = None,
                 thresh: float = 0.7, min_kept: int = 100000) -> None:
        super().__init__(ignore_index, class_weight)
        self.thresh, self.min_kept = float(thresh), int(min_kept)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        self._check_inputs(logits, target)
        losses = self.pixel_losses(logits, target)
        valid = self._valid(target).flatten()
        with torch.no_grad():
            prob = torch.exp(-losses.detach().flatten())
            prob = torch.where(valid, prob, torch.full_like(prob, 2.0))  # ignored sort last
            sorted_prob = torch.sort(prob).values
            k = (valid.sum() - 1).clamp(min=0, max=self.min_kept - 1) if self.min_kept > 0 else valid.sum() * 0
            kth = sorted_prob.gather(0, k.reshape(1)).squeeze(0)
            threshold = torch.maximum(kth, torch.tensor(self.thresh, device=prob.device))
            keep = (valid & (prob <= threshold)).float()
        w = self._pixel_weight(target).flatten() * keep
        return (losses.flatten() * w).sum() / w.sum().clamp_min(1e-12)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, thresh={self.thresh}, min_kept={self.min_kept}"


class DiceLoss(_SegLoss):
    """Soft multi-class Dice: ``1 - (2 sum p y + s) / (sum p + sum y + s)`` per class over the batch,
    averaged over classes (class weights, if given, weight that average). Ignored pixels are masked."""

    @checked(ignore_index=ANY, class_weight=NON_NEGATIVE, smooth=NON_NEGATIVE)
    def __init__(self, ignore_index: int = 255, class_weight: Optional[Sequence[float]] = None,
                 smooth: float = 1.0) -> None:
        super().__init__(ignore_index, class_weight)
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        self._check_inputs(logits, target)
        k = logits.shape[1]
        valid = self._valid(target).unsqueeze(1).float()
        prob = logits.float().softmax(1) * valid
        onehot = F.one_hot(self._safe_target(target), k).permute(0, 3, 1, 2).float() * valid
        inter = (prob * onehot).sum((0, 2, 3))
        denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        dice = 1.0 - (2.0 * inter + self.smooth) / (denom + self.smooth)
        if self.class_weight is None:
            return dice.mean()
        w = self.class_weight.to(dice.device)
        return (dice * w).sum() / w.sum()


def _lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors (columns = classes)."""
    gts = gt_sorted.sum(0, keepdim=True)
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union.clamp_min(1e-12)
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], 0)


class LovaszSoftmaxLoss(_SegLoss):
    """Lovasz-softmax (Berman et al., CVPR 2018) over all pixels of the batch, averaged over the
    classes present in the target (``classes="present"``) or all classes (``"all"``). Ignored pixels
    get zero error, which is exactly equivalent to removing them."""

    @checked(ignore_index=ANY, class_weight=NON_NEGATIVE, classes=("present", "all"))
    def __init__(self, ignore_index: int = 255, class_weight: Optional[Sequence[float]] = None,
                 classes: str = "present") -> None:
        super().__init__(ignore_index, class_weight)
        if classes not in ("present", "all"):
            raise ValueError(f"classes must be 'present' or 'all', got {classes!r}")
        self.classes = classes

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        self._check_inputs(logits, target)
        k = logits.shape[1]
        valid = self._valid(target).flatten().float().unsqueeze(1)  # (P, 1)
        prob = logits.float().softmax(1).permute(0, 2, 3, 1).reshape(-1, k)
        fg = F.one_hot(self._safe_target(target).flatten(), k).float() * valid
        errors = (fg - prob).abs() * valid
        errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
        fg_sorted = fg.gather(0, perm)
        per_class = (errors_sorted * _lovasz_grad(fg_sorted)).sum(0)
        w = torch.ones_like(per_class) if self.classes == "all" else (fg.sum(0) > 0).float()
        if self.class_weight is not None:
            w = w * self.class_weight.to(w.device)
        return (per_class * w).sum() / w.sum().clamp_min(1e-12)


LOSSES.update(ce=CrossEntropyLoss, ohem=OhemCrossEntropyLoss, dice=DiceLoss, lovasz=LovaszSoftmaxLoss)


def class_presence(target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """(B, H, W) label map -> (B, K) float32: 1 where class k occurs in the image, else 0.

    Pixels equal to ``ignore_index`` or outside 0..K-1 count for no class (mmseg EncHead's
    ``_convert_to_onehot_labels``, a histogram over 0..K-1 per image)."""
    valid = (target >= 0) & (target < num_classes) & (target != ignore_index)
    index = torch.where(valid, target.long(), torch.zeros_like(target, dtype=torch.long)).flatten(1)
    counts = torch.zeros(target.shape[0], num_classes, device=target.device)
    counts.scatter_add_(1, index, valid.flatten(1).float())
    return (counts > 0).float()


def class_presence_loss(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """EncNet's semantic-encoding (SE) loss: binary cross entropy with logits between the (B, K)
    class-presence logits and :func:`class_presence` of the label map, averaged over B * K (mmseg
    ``CrossEntropyLoss(use_sigmoid=True)``; the weight, 0.2, is the model's ``loss_weights["se"]``)."""
    if logits.dim() != 2 or target.dim() != 3 or logits.shape[0] != target.shape[0]:
        raise ValueError(f"expected presence logits (B, K) and target (B, H, W), got {tuple(logits.shape)} "
                         f"and {tuple(target.shape)}")
    presence = class_presence(target, logits.shape[1], ignore_index)
    return F.binary_cross_entropy_with_logits(logits.float(), presence)


# losses of model outputs that are not per-pixel logits, by the kind a head declares in ``loss_kinds``
OUTPUT_LOSSES: Dict[str, Callable[..., Tensor]] = {"presence": class_presence_loss}


def output_loss(kind: Optional[str], logits: Tensor, target: Tensor, criterion: Callable[[Tensor, Tensor], Tensor],
                ignore_index: int = 255) -> Tensor:
    """The loss of one model output: ``criterion(logits, target)`` for per-pixel logits (``kind`` None),
    else ``OUTPUT_LOSSES[kind](logits, target, ignore_index)`` (``"presence"``: the SE loss)."""
    if kind is None:
        return criterion(logits, target)
    if kind not in OUTPUT_LOSSES:
        raise ValueError(f"unknown output loss {kind!r}; expected one of {sorted(OUTPUT_LOSSES)}")
    return OUTPUT_LOSSES[kind](logits, target, ignore_index)


@checked(name=("ce", "ohem", "dice", "lovasz"), ignore_index=ANY, class_weight=NON_NEGATIVE)
def build_loss(name: str = "ce", ignore_index: int = 255, class_weight: Optional[Sequence[float]] = None,
               **kwargs: Any) -> nn.Module:
    """Loss ``name`` in ``"ce"``, ``"ohem"``, ``"dice"``, ``"lovasz"``; callable ``(logits, target) -> scalar``."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}")
    return LOSSES[name](ignore_index=ignore_index, class_weight=class_weight, **kwargs)


__all__ = ["build_loss", "CrossEntropyLoss", "OhemCrossEntropyLoss", "DiceLoss", "LovaszSoftmaxLoss", "LOSSES",
           "class_presence", "class_presence_loss", "output_loss", "OUTPUT_LOSSES"]
