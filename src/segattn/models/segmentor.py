"""Backbone + decode head (+ auxiliary FCN head) = a segmentation model.

``model(x)`` in eval mode returns logits (B, K, H, W) at the input size; in train mode a dict with
``"out"``, ``"aux"`` (FCN head on stage 4 = ``layer3``, when ``aux=True``) and any extra supervised
outputs of the head (DANet's ``"pam"`` and ``"cam"``), all at the input size, except outputs that are
not maps (EncNet's ``"se"`` class-presence logits (B, K), whose loss kind is in ``loss_kinds``). ``loss_weights`` gives
each key's weight. ``save_pretrained`` / :func:`from_pretrained` write / read a Hub-format folder
(:mod:`segattn.models.folder`, :mod:`segattn.models.pretrained`).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import warn_non_finite
from segattn.errors import ArgumentError
from segattn.models.folder import save_pretrained
from segattn.models.hub import push_to_hub
from segattn.modules.base import _is_compiling, check_dtype, check_feature_map


class SegmentationModel(nn.Module):
    """A segmentation network: ``backbone`` features -> ``head`` (dict of logits) -> upsampling.

    Args:
        backbone: returns a list of feature maps (``features_only`` style) with ``feature_info``.
        head: maps that list to ``{"out": logits, ...}`` at feature resolution; may define
            ``loss_weights`` for its extra outputs.
        num_classes: classifier outputs.
        aux_head: auxiliary head (an FCN on ``feats[aux_index]``), used only in training.
        aux_weight: weight of ``"aux"`` in :attr:`loss_weights` (0.4 as mmseg/PSPNet).
        align_corners: bilinear upsampling convention (False as mmseg; True as the PSPNet/CCNet code).
        neck: optional parameter-free step between the backbone and the heads (HRNet's
            :class:`~segattn.models.backbones.hrnet.ResizeConcat`); ``None`` for the other backbones.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        num_classes: int,
        aux_head: Optional[nn.Module] = None,
        aux_index: int = 2,
        aux_weight: float = 0.4,
        align_corners: bool = False,
        neck: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.backbone, self.head, self.aux_head = backbone, head, aux_head
        self.neck = neck
        self.num_classes, self.aux_index, self.align_corners = num_classes, aux_index, align_corners
        self.loss_weights: Dict[str, float] = {"out": 1.0}
        if aux_head is not None:
            self.loss_weights["aux"] = float(aux_weight)
        self.loss_weights.update(getattr(head, "loss_weights", {}))
        # outputs that are not per-pixel logits and their loss kind (EncNet's "se": "presence")
        self.loss_kinds: Dict[str, str] = dict(getattr(head, "loss_kinds", {}))
        self.config: Dict[str, Any] = {}
        self._backbone_frozen = False
        self.in_channels: Optional[int] = _input_channels(backbone)
        # eval-mode forwards warn once when the input holds NaN / inf; False skips the check (one
        # reduction over the input and, on a GPU, a sync per forward until it has warned)
        self.check_finite = True
        self._warned_non_finite = False

    def _resize(self, logits: Tensor, size: Tuple[int, int]) -> Tensor:
        if tuple(logits.shape[-2:]) == tuple(size):
            return logits
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)

    def check_input(self, x: Tensor) -> None:
        """``TypeError`` / ``ValueError`` unless ``x`` is a (B, in_channels, H, W) floating tensor of the
        model's parameter dtype (any floating dtype under autocast)."""
        what = type(self).__name__
        check_feature_map(x, self.in_channels, what)
        check_dtype(self, x, what)

    def forward(self, x: Tensor) -> Union[Tensor, Dict[str, Tensor]]:
        self.check_input(x)
        if (getattr(self, "check_finite", True) and not self.training and not getattr(self, "_warned_non_finite", False)
                and not _is_compiling()):
            self._warned_non_finite = warn_non_finite(
                x, f"{type(self).__name__} input", "shown once per model; model.check_finite = False skips the check")
        size = (x.shape[-2], x.shape[-1])
        feats = self.backbone(x)
        if self.neck is not None:
            feats = self.neck(feats)
        outs: Dict[str, Tensor] = self.head(feats)
        if not self.training:
            return self._resize(outs["out"], size)
        if self.aux_head is not None:
            outs["aux"] = self.aux_head([feats[self.aux_index]])["out"]
        return {k: self._resize(v, size) if v.dim() == 4 else v for k, v in outs.items()}

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """Labels (B, H, W) int64 from an eval-mode, no-grad forward; restores the training flag."""
        was_training = self.training
        self.eval()
        try:
            logits = self(images)
        finally:
            self.train(was_training)
        return logits.argmax(1)

    def compute_loss(self, outputs: Dict[str, Tensor], target: Tensor,
                     criterion: Callable[[Tensor, Tensor], Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Weighted sum of ``criterion`` over the train-mode outputs; returns ``(total, per_key)``.

        Outputs named in :attr:`loss_kinds` (EncNet's ``"se"`` class-presence logits) take their own
        loss (:func:`segattn.models.losses.output_loss`, with the criterion's ``ignore_index``)."""
        from segattn.models.losses import output_loss

        if not isinstance(outputs, dict):
            raise ArgumentError(
                f"compute_loss expects the train-mode outputs (a dict such as {{'out': logits, 'aux': ...}} from "
                f"model.train() then model(x)), got {type(outputs).__name__}"
                + (" (the eval-mode logits: call model.train() before the forward, or pass {'out': logits})"
                   if isinstance(outputs, Tensor) else ""))
        ignore = int(getattr(criterion, "ignore_index", 255))
        parts = {k: output_loss(self.loss_kinds.get(k), v, target, criterion, ignore) for k, v in outputs.items()}
        total = sum(self.loss_weights.get(k, 1.0) * v for k, v in parts.items())
        return total, parts  # type: ignore[return-value]

    # ----- backbone freezing ------------------------------------------------------------------
    def freeze_backbone(self) -> SegmentationModel:
        """Stop gradients to the backbone and keep its BatchNorm statistics fixed (also after ``.train()``)."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self._backbone_frozen = True
        self.backbone.eval()
        return self

    def unfreeze_backbone(self) -> SegmentationModel:
        for p in self.backbone.parameters():
            p.requires_grad_(True)
        self._backbone_frozen = False
        self.backbone.train(self.training)
        return self

    def train(self, mode: bool = True) -> SegmentationModel:
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.eval()
        return self

    # ----- persistence ------------------------------------------------------------------------
    def save_pretrained(self, directory: Union[str, os.PathLike[str]], **kwargs: Any) -> str:
        """Write a Hub-format folder (``config.json``, ``model.safetensors`` or ``model.pt``, ``README.md``)
        as one unit; see :func:`segattn.models.folder.save_pretrained` for the keywords (class names,
        palette, mean/std, crop, eval settings, metrics, ``overwrite``)."""
        return save_pretrained(self, directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Save and upload to the Hugging Face Hub (``[hub]`` extra); see :func:`segattn.models.hub.push_to_hub`."""
        return push_to_hub(self, repo_id, **kwargs)


@contextlib.contextmanager
def finite_check_off(model: nn.Module) -> Iterator[None]:
    """Within the block ``model`` does not check its input for NaN / inf (a caller that warns per image)."""
    previous = getattr(model, "check_finite", None)
    if previous is None:
        yield
        return
    model.check_finite = False
    try:
        yield
    finally:
        model.check_finite = previous


def _input_channels(backbone: nn.Module) -> Optional[int]:
    """Channels the backbone takes: its ``in_channels`` / ``in_chans`` or its first convolution's."""
    for attr in ("in_channels", "in_chans"):
        value = getattr(backbone, attr, None)
        if isinstance(value, int):
            return value
    conv = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else int(conv.in_channels)


def feature_channels(backbone: nn.Module) -> List[int]:
    return list(backbone.feature_info.channels())
