"""Explanation 1 (denoising), the model side: mIoU under input noise and FGSM."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.analyze.measure.common import FGSM_EPS, NOISE_SIGMAS, Batches, Confusion, logits_of


def fgsm(model: nn.Module, images: Tensor, masks: Tensor, eps: Union[float, Tensor], ignore_index: int) -> Tensor:
    """One FGSM step: ``x + eps * sign(grad_x CE(model(x), y))`` (mean CE over labelled pixels; no clamp;
    ``eps`` a number or a per-channel (1, C, 1, 1) tensor)."""
    x = images.clone().requires_grad_(True)
    loss = F.cross_entropy(logits_of(model, x).float(), masks, ignore_index=ignore_index)
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None:  # the output does not depend on the input: nothing to attack
        return images.clone()
    return (images + eps * grad.sign()).detach()


def measure_robustness(model: nn.Module, batches: Batches, num_classes: int, ignore_index: int,
                       sigmas: Sequence[float] = NOISE_SIGMAS, eps: Sequence[float] = FGSM_EPS,
                       seed: int = 0, pixel_unit: Optional[Tensor] = None) -> Dict[str, float]:
    """Explanation 1 (denoising), the model side: mIoU under input perturbations and its drop.

    ``miou_clean``: dataset-level mIoU (percent) of plain eval forwards. ``miou_noise_<s>``: with
    white Gaussian noise of std ``s`` (units of the input tensor; the synthetic set's inputs are
    [0, 1] intensities) added to every input value, the same noise for every model (generator seeded
    with ``seed``). ``miou_fgsm_<e>``: after one FGSM step of size ``e`` against the model's own
    cross-entropy (white box). ``drop_*`` = clean minus perturbed, in mIoU points (positive = the
    perturbation hurts). An input-independent model has every drop 0.

    ``s`` and ``e`` are fractions of the pixel range: ``pixel_unit`` (C,) is the change of each input
    channel for a change of the whole pixel range (``255 / std`` for inputs standardised on the
    0-255 scale, :func:`segattn.analyze.run.pixel_unit`; 1, the default, for [0, 1] inputs).
    """
    gen = torch.Generator().manual_seed(seed)
    unit = 1.0 if pixel_unit is None else pixel_unit.reshape(1, -1, 1, 1)
    conf = {"clean": Confusion(num_classes, ignore_index)}
    conf.update({f"noise_{s:g}": Confusion(num_classes, ignore_index) for s in sigmas})
    conf.update({f"fgsm_{e:.4g}": Confusion(num_classes, ignore_index) for e in eps})
    for images, masks in batches:
        with torch.no_grad():
            conf["clean"].add(logits_of(model, images).argmax(1), masks)
            for s in sigmas:
                noise = torch.randn(images.shape, generator=gen).to(images) * (s * unit)
                conf[f"noise_{s:g}"].add(logits_of(model, images + noise).argmax(1), masks)
        for e in eps:
            adv = fgsm(model, images, masks, e * unit, ignore_index)
            with torch.no_grad():
                conf[f"fgsm_{e:.4g}"].add(logits_of(model, adv).argmax(1), masks)
    out = {f"miou_{k}": c.miou() for k, c in conf.items()}
    for k in conf:
        if k != "clean":
            out[f"drop_{k}"] = out["miou_clean"] - out[f"miou_{k}"]
    return out
