"""Evaluation as the papers do it: whole-image or sliding-window inference, optional multi-scale + flip.

- ``whole``: one forward pass per image at its (possibly resized) size.
- ``slide``: windows of ``crop_size`` every ``stride`` pixels (the last window is aligned with the
  image border, as in mmsegmentation); overlapping logits are averaged.
- ``scales`` / ``flip``: the image is resized by each scale (bilinear, antialiased when shrinking, like
  the Pillow resize of the data pipeline), optionally also flipped
  horizontally; softmax probabilities of every pass are resized back to the image size, un-flipped
  and averaged. With ``scales=[1.0]`` and no flip the logits themselves are returned.

The dataset-level confusion matrix is summed over processes before the metrics are taken
(see :mod:`segattn.engine.metrics` for the definitions and the NaN policy).
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import warn_non_finite
from segattn.engine.metrics import ConfusionMatrix
from segattn.models.segmentor import finite_check_off
from segattn.progress import Progress


def _pair(v: Optional[Sequence[int]], name: str) -> Tuple[int, int]:
    """``eval.<name>`` as (h, w) positive ints; ``ValueError`` naming the key otherwise."""
    if v is None:
        raise ValueError(f"slide mode needs eval.{name} (h, w), e.g. [512, 1024]")
    vals = [v] if isinstance(v, int) else list(v)
    if len(vals) not in (1, 2) or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in vals):
        raise ValueError(f"eval.{name} must be one or two positive integers (h, w), got {v!r}")
    return (vals[0], vals[-1])


def check_settings(mode: str, crop_size: Optional[Sequence[int]], stride: Optional[Sequence[int]],
                   scales: Sequence[float]) -> None:
    """Raise ``ValueError`` naming the ``eval.*`` key for settings that cannot work (before any image is read)."""
    if mode not in ("whole", "slide"):
        raise ValueError(f"unknown eval.mode {mode!r}; expected 'whole' or 'slide'")
    if mode == "slide":
        _pair(crop_size, "crop_size")
        _pair(stride, "stride")
    for s in scales:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 8:
            raise ValueError(f"eval.scales must be numbers in (0, 8], got {list(scales)!r}")


def forward_logits(model: nn.Module, images: Tensor) -> Tensor:
    """Eval-mode logits at the input size, float32 (a dict output uses its ``"out"`` entry)."""
    out = model(images)
    if isinstance(out, dict):
        if "out" not in out:
            raise ValueError(f"the model returned a dict without the logits key 'out' (keys: {sorted(out)})")
        out = out["out"]
    if out.shape[-2:] != images.shape[-2:]:
        out = F.interpolate(out.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
    return out.float()


def slide_logits(model: nn.Module, images: Tensor, crop_size: Sequence[int], stride: Sequence[int],
                 num_classes: int) -> Tensor:
    """Average of window logits over a sliding grid covering the whole image."""
    ch, cw = _pair(crop_size, "crop_size")
    sh, sw = _pair(stride, "stride")
    if sh > ch or sw > cw:
        raise ValueError(f"slide inference: stride {[sh, sw]} is larger than crop_size {[ch, cw]}; the pixels between "
                         "the windows would have no prediction (expected stride <= crop_size on each side)")
    b, _, h, w = images.shape
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    logits = images.new_zeros((b, num_classes, h, w), dtype=torch.float32)
    count = images.new_zeros((1, 1, h, w), dtype=torch.float32)
    for r in range(rows):
        for c in range(cols):
            y1 = min(r * sh, max(h - ch, 0))
            x1 = min(c * sw, max(w - cw, 0))
            y2, x2 = min(y1 + ch, h), min(x1 + cw, w)
            logits[:, :, y1:y2, x1:x2] += forward_logits(model, images[:, :, y1:y2, x1:x2])
            count[:, :, y1:y2, x1:x2] += 1
    return logits / count


def single_pass(model: nn.Module, images: Tensor, mode: str, crop_size: Optional[Sequence[int]],
                stride: Optional[Sequence[int]], num_classes: int) -> Tensor:
    if mode == "whole":
        return forward_logits(model, images)
    if mode == "slide":
        return slide_logits(model, images, crop_size, stride, num_classes)
    raise ValueError(f"unknown eval mode {mode!r}; expected 'whole' or 'slide'")


def resize_by(images: Tensor, scale: float) -> Tensor:
    """``images`` (B, C, H, W) resized by ``scale`` for inference: bilinear to ``round(H * scale)`` x
    ``round(W * scale)`` (at least 1), antialiased when shrinking as Pillow's bilinear resize in the data
    pipeline is; the tensor itself when the size does not change."""
    h, w = images.shape[-2:]
    size = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
    if size == (h, w):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)


@torch.no_grad()
def infer(model: nn.Module, images: Tensor, num_classes: int, mode: str = "whole",
          crop_size: Optional[Sequence[int]] = None, stride: Optional[Sequence[int]] = None,
          scales: Sequence[float] = (1.0,), flip: bool = False) -> Tensor:
    """Scores (B, K, H, W) for ``images``: logits for a single pass, mean probabilities for TTA."""
    scales = list(scales) or [1.0]
    if scales == [1.0] and not flip:
        return single_pass(model, images, mode, crop_size, stride, num_classes)
    h, w = images.shape[-2:]
    total = images.new_zeros((images.shape[0], num_classes, h, w), dtype=torch.float32)
    passes = 0
    for s in scales:
        x = resize_by(images, s)
        for flipped in ([False, True] if flip else [False]):
            xi = x.flip(-1) if flipped else x
            out = single_pass(model, xi, mode, crop_size, stride, num_classes)
            out = out.flip(-1) if flipped else out
            if out.shape[-2:] != (h, w):
                out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
            total += out.softmax(1)
            passes += 1
    return total / passes


def _autocast(device: torch.device, amp_dtype: Optional[torch.dtype]):  # noqa: ANN202
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _local_limit(max_samples: Optional[int]) -> Optional[int]:
    """This process's share of the first ``max_samples`` images under the ``ShardSampler`` split."""
    if max_samples is None:
        return None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return len(range(dist.get_rank(), int(max_samples), dist.get_world_size()))
    return int(max_samples)


def _warn_non_finite_images(images: Tensor, start: int, names: Optional[Sequence[str]]) -> None:
    """One warning per image of the batch holding NaN / inf; ``start`` = images this process saw before."""
    bad = (~torch.isfinite(images.flatten(1))).any(1)
    if not bool(bad.any()):
        return
    import torch.distributed as dist

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    for j in bad.nonzero().flatten().tolist():
        index = rank + (start + j) * world  # the ShardSampler order
        name = names[index] if names is not None and index < len(names) else f"#{index} of the split"
        warn_non_finite(images[j], f"image {name}")


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Tuple[Tensor, Tensor]], num_classes: int,
             ignore_index: int = 255, class_names: Optional[Sequence[str]] = None,
             device: Optional[torch.device] = None, mode: str = "whole",
             crop_size: Optional[Sequence[int]] = None, stride: Optional[Sequence[int]] = None,
             scales: Sequence[float] = (1.0,), flip: bool = False, max_samples: Optional[int] = None,
             amp_dtype: Optional[torch.dtype] = None, show_progress: bool = True,
             names: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Metrics of ``model`` over ``batches`` of (image, mask), confusion matrix all-reduced.

    ``max_samples`` counts images (all processes together, taken from the start of a
    ``ShardSampler`` split): the last batch is cut to fit. ``show_progress`` reports progress on
    stderr (:mod:`segattn.progress`). An image holding NaN / inf values is scored but warned about
    (``NonFiniteInputWarning``), naming ``names[i]`` (the files of the split, in dataset order) if given. Labels without a single valid pixel (all ``ignore_index``)
    raise :class:`NoValidPixels` instead of returning metrics that are all NaN.
    """
    check_settings(mode, crop_size, stride, list(scales) or [1.0])
    if max_samples is not None and (isinstance(max_samples, bool) or int(max_samples) < 1):
        raise ValueError(f"eval.max_samples must be a positive integer or null, got {max_samples!r}")
    device = device or next(model.parameters()).device
    limit = _local_limit(max_samples)
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    seen = 0
    bar = Progress(batches, desc="eval", unit="batch", enabled=show_progress)
    try:
        for images, masks in bar:
            if limit is not None:
                if seen >= limit:
                    break
                images, masks = images[: limit - seen], masks[: limit - seen]
            _warn_non_finite_images(images, seen, names)
            seen += images.shape[0]
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            with _autocast(device, amp_dtype), finite_check_off(model):  # warned above, naming the image
                scores = infer(model, images, num_classes, mode, crop_size, stride, scales, flip)
            if scores.shape[-2:] != masks.shape[-2:]:
                scores = F.interpolate(scores.float(), size=masks.shape[-2:], mode="bilinear", align_corners=False)
            cm.update(scores.argmax(1), masks)
    finally:
        bar.close()
        model.train(was_training)
    cm.all_reduce()
    if int(cm.mat.sum()) == 0:
        raise NoValidPixels(f"evaluation found no valid pixel in {seen} image(s) (per process): every label pixel is "
                            f"ignore_index={ignore_index} or outside 0..{num_classes - 1}, so every metric would be "
                            "NaN; check the validation masks and the dataset's ignore_index")
    return cm.compute(class_names)


class NoValidPixels(ValueError):
    """An evaluation whose labels hold no pixel to score (all ``ignore_index`` or out of range)."""
