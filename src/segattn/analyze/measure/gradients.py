"""The gradient that reaches the backbone and the module's input."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.analyze.measure.common import (
    Batches,
    _nanmean,
    capture,
    context_slot,
    em_gradient_cut,
    em_mappers,
    logits_of,
)


def _grads(loss: Tensor, *wrt: Tensor) -> List[float]:
    """``||d loss / d t||_F`` for each tensor t (0 where t does not reach the loss)."""
    live = [t for t in wrt if t.requires_grad]
    grads = iter(torch.autograd.grad(loss, live, allow_unused=True)) if live else iter(())
    norms = []
    for t in wrt:
        g = next(grads) if t.requires_grad else None
        norms.append(float(g.norm()) if g is not None else 0.0)
    return norms


def measure_gradients(model: nn.Module, batches: Batches, ignore_index: int) -> Dict[str, float]:
    """Gradient that reaches the backbone and the module's input, per image (eval-mode BatchNorm).

    For each validation image alone, ``L`` = mean cross-entropy over its labelled pixels;
    ``grad_backbone`` = ``||dL/df||_F`` at the feature map f the head reads last (the backbone's
    last output; with a neck, HRNet's concatenation of its branches, the neck's last output), ``grad_module_in`` =
    ``||dL/dr||_F`` at the module's input r (in the generic layout r reaches the loss only through the
    module). Both with the EM iterations cut from autograd as in training (``*_cut``; EMA's default)
    and differentiated exactly (``*_exact``); equal for modules without EM. Means over images.
    """
    module = context_slot(model)
    if module is None:
        return {}
    feats: Dict[str, Tensor] = {}

    def grab(mod: nn.Module, args: Tuple[Any, ...], out: Any) -> None:
        feats["f"] = out[-1] if isinstance(out, (list, tuple)) else out

    out: Dict[str, List[float]] = {}
    # without EM iterations cut from autograd the two modes are the same computation: run it once
    modes = ("cut", "exact") if any(not m.backprop for m in em_mappers(model)) else ("cut",)
    source = getattr(model, "neck", None) or model.backbone  # what the heads read
    hook = source.register_forward_hook(grab)
    try:
        for mode in modes:
            ctx = em_gradient_cut(model) if mode == "cut" else contextlib.nullcontext()
            with ctx:
                for images, masks in batches:
                    for i in range(images.shape[0]):
                        with capture(module) as st:
                            loss = F.cross_entropy(logits_of(model, images[i:i + 1]).float(), masks[i:i + 1],
                                                   ignore_index=ignore_index)
                        # gradients at f and r only: nothing is back-propagated into the backbone
                        gf, gr = _grads(loss, feats["f"], st["in"])
                        out.setdefault(f"grad_backbone_{mode}", []).append(gf)
                        out.setdefault(f"grad_module_in_{mode}", []).append(gr)
    finally:
        hook.remove()
    if modes == ("cut",):
        out["grad_backbone_exact"] = out.get("grad_backbone_cut", [])
        out["grad_module_in_exact"] = out.get("grad_module_in_cut", [])
    return {k: _nanmean(v) for k, v in out.items()}
