"""Dataset-level segmentation metrics from one confusion matrix.

The matrix ``M[g, p]`` counts pixels of ground-truth class ``g`` predicted as ``p`` over the whole
dataset (pixels whose target is ``ignore_index`` or outside ``[0, K)`` are skipped). Under
torch.distributed the per-rank matrices are summed with ``all_reduce`` before any metric is taken.

- ``IoU_c = M[c,c] / (sum_p M[c,p] + sum_g M[g,c] - M[c,c])``
- ``Acc_c = M[c,c] / sum_p M[c,p]`` (recall of class c)
- ``aAcc = trace(M) / sum(M)`` (pixel accuracy), ``mAcc`` and ``mIoU`` are means over classes.

NaN policy (the mmsegmentation one): a class whose union is empty (absent from the ground truth and
never predicted) has IoU = NaN and is left out of mIoU (nan-mean); a class absent from the ground
truth but predicted somewhere has IoU = 0 and *does* count. ``Acc_c`` is NaN when the class is absent
from the ground truth and is left out of mAcc. With no valid pixel at all every metric is NaN.
Per-class values are reported with the class names; NaN appears as ``null`` in JSON.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor


class ConfusionMatrix:
    """Accumulates a (K, K) int64 confusion matrix on ``device``."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: Optional[torch.device] = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add predictions ``pred`` (labels, any shape) against ``target`` (same shape)."""
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        k = self.num_classes
        pred = pred.reshape(-1).to(self.mat.device, torch.int64)
        target = target.reshape(-1).to(self.mat.device, torch.int64)
        keep = (target != self.ignore_index) & (target >= 0) & (target < k)
        idx = target[keep] * k + pred[keep].clamp(0, k - 1)
        self.mat += torch.bincount(idx, minlength=k * k).reshape(k, k)

    def reset(self) -> None:
        self.mat.zero_()

    def all_reduce(self) -> None:
        """Sum the matrix over all processes (no-op unless torch.distributed is initialised)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.mat, op=dist.ReduceOp.SUM)

    def compute(self, class_names: Optional[Sequence[str]] = None) -> Dict[str, object]:
        """Metrics of the current matrix (call :meth:`all_reduce` first under distributed)."""
        return metrics_from_confusion(self.mat, class_names)


def _nanmean(values: Tensor) -> float:
    keep = ~torch.isnan(values)
    return float(values[keep].mean()) if bool(keep.any()) else math.nan


def metrics_from_confusion(mat: Tensor, class_names: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """``mIoU``, ``aAcc``, ``mAcc`` (fractions in [0, 1]) plus per-class ``IoU`` and ``Acc`` dicts."""
    m = mat.detach().to("cpu", torch.float64)
    k = m.shape[0]
    names: List[str] = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} classes")
    tp = torch.diagonal(m)
    gt = m.sum(1)
    pr = m.sum(0)
    union = gt + pr - tp
    nan = torch.tensor(math.nan, dtype=torch.float64)
    iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
    acc = torch.where(gt > 0, tp / gt.clamp_min(1), nan)
    total = float(m.sum())
    return {
        "mIoU": _nanmean(iou),
        "aAcc": float(tp.sum()) / total if total > 0 else math.nan,
        "mAcc": _nanmean(acc),
        "IoU": {n: float(v) for n, v in zip(names, iou)},
        "Acc": {n: float(v) for n, v in zip(names, acc)},
        "pixels": int(total),
    }


def json_safe(obj: object) -> object:
    """Replace NaN/inf floats by ``None`` recursively (JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def format_metrics(metrics: Dict[str, object]) -> str:
    """A small text table: one row per class, then the summary line (percentages)."""

    def pct(v: object) -> str:
        return "   nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):6.2f}"

    iou = metrics["IoU"]
    acc = metrics["Acc"]
    assert isinstance(iou, dict) and isinstance(acc, dict)
    width = max([5] + [len(n) for n in iou])
    lines = [f"{'class':<{width}}    IoU    Acc"]
    for name in iou:
        lines.append(f"{name:<{width}} {pct(iou[name])} {pct(acc[name])}")
    lines.append(f"mIoU {pct(metrics['mIoU'])}  aAcc {pct(metrics['aAcc'])}  mAcc {pct(metrics['mAcc'])}")
    return "\n".join(lines)
