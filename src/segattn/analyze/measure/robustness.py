"""Explanation 1 (denoising), the model side: mIoU under input noise, FGSM and PGD (with a
gradient-masking check: PGD with more steps, and a transfer attack from another model)."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.analyze.measure.common import FGSM_EPS, NOISE_SIGMAS, Batches, Confusion, logits_of

PGD_EPS = (2 / 255,)  # PGD radius (L-infinity), fraction of the pixel range; the larger FGSM step, for comparison
PGD_STEPS = (10, 20)  # the short attack and the gradient-masking check (more steps must not score higher)


def fgsm(model: nn.Module, images: Tensor, masks: Tensor, eps: Union[float, Tensor], ignore_index: int) -> Tensor:
    """One FGSM step: ``x + eps * sign(grad_x CE(model(x), y))`` (mean CE over labelled pixels; no clamp;
    ``eps`` a number or a per-channel (1, C, 1, 1) tensor)."""
    x = images.clone().requires_grad_(True)
    loss = F.cross_entropy(logits_of(model, x).float(), masks, ignore_index=ignore_index)
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None:  # the output does not depend on the input: nothing to attack
        return images.clone()
    return (images + eps * grad.sign()).detach()


def _bound(delta: Tensor, eps: Union[float, Tensor]) -> Tensor:
    """``delta`` projected onto the L-infinity ball of radius ``eps`` (a number or a per-channel tensor)."""
    e = torch.as_tensor(eps, dtype=delta.dtype, device=delta.device)
    return torch.maximum(torch.minimum(delta, e), -e)


def pgd(model: nn.Module, images: Tensor, masks: Tensor, eps: Union[float, Tensor], ignore_index: int,
        steps: int = 10, step_size: Optional[float] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    """Projected gradient ascent on the model's mean CE within the L-infinity ball ``||x' - x||_inf <= eps``
    (Madry et al.): a uniform random start in the ball, then ``steps`` steps ``delta <- P(delta + a sign
    grad)`` with ``a = step_size`` (default ``2.5 eps / steps``, so the walk can cross the ball) and P the
    projection onto the ball. No clamp to the pixel range (as :func:`fgsm`). ``eps`` a number or a
    per-channel (1, C, 1, 1) tensor; ``step_size`` then a fraction of it (default 2.5 / steps)."""
    frac = (2.5 / max(steps, 1)) if step_size is None else float(step_size)
    u = torch.rand(images.shape, generator=generator).to(images)
    delta = _bound((2 * u - 1) * torch.as_tensor(eps).to(images), eps)
    for _ in range(steps):
        x = (images + delta).detach().requires_grad_(True)
        loss = F.cross_entropy(logits_of(model, x).float(), masks, ignore_index=ignore_index)
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        if grad is None:  # the output does not depend on the input
            break
        delta = _bound(delta + frac * torch.as_tensor(eps).to(images) * grad.sign(), eps)
    return (images + delta).detach()


def transfer_miou(source: nn.Module, target: nn.Module, batches: Batches, num_classes: int, ignore_index: int,
                  eps: float = PGD_EPS[0], steps: int = PGD_STEPS[0], seed: int = 0,
                  pixel_unit: Optional[Tensor] = None) -> float:
    """mIoU (percent) of ``target`` on PGD examples crafted against ``source`` (black-box transfer). A
    target whose white-box PGD mIoU is far above this transfer mIoU masks its gradients: an attack that
    does not even see it hurts it more than one that does."""
    gen = torch.Generator().manual_seed(seed)
    unit = 1.0 if pixel_unit is None else pixel_unit.reshape(1, -1, 1, 1)
    conf = Confusion(num_classes, ignore_index)
    for images, masks in batches:
        adv = pgd(source, images, masks, eps * unit, ignore_index, steps, generator=gen)
        with torch.no_grad():
            conf.add(logits_of(target, adv).argmax(1), masks)
    return conf.miou()


def measure_robustness(model: nn.Module, batches: Batches, num_classes: int, ignore_index: int,
                       sigmas: Sequence[float] = NOISE_SIGMAS, eps: Sequence[float] = FGSM_EPS,
                       seed: int = 0, pixel_unit: Optional[Tensor] = None, pgd_eps: Sequence[float] = PGD_EPS,
                       pgd_steps: Sequence[int] = PGD_STEPS) -> Dict[str, float]:
    """Explanation 1 (denoising), the model side: mIoU under input perturbations and its drop.

    ``miou_clean``: dataset-level mIoU (percent) of plain eval forwards. ``miou_noise_<s>``: with
    white Gaussian noise of std ``s`` (units of the input tensor; the synthetic set's inputs are
    [0, 1] intensities) added to every input value, the same noise for every model (generator seeded
    with ``seed``). ``miou_fgsm_<e>``: after one FGSM step of size ``e`` against the model's own
    cross-entropy (white box). ``miou_pgd<n>_<e>``: after :func:`pgd` with ``n`` steps of radius ``e``
    (random start, same generator for every model); FGSM at the same ``e`` is a weaker attack, so
    ``fgsm_gap_<e>`` = mIoU(FGSM) - mIoU(PGD, fewest steps) should be >= 0, and ``pgd_masking_<e>`` =
    mIoU(PGD, most steps) - mIoU(PGD, fewest steps) > 0 (more steps scoring *higher*) is the sign of
    masked gradients that makes the robustness number meaningless. ``drop_*`` = clean minus perturbed, in mIoU points (positive = the
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
    conf.update({f"pgd{n}_{e:.4g}": Confusion(num_classes, ignore_index) for e in pgd_eps for n in pgd_steps})
    pgd_gen = torch.Generator().manual_seed(seed + 1)
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
        for e in pgd_eps:
            for n in pgd_steps:
                adv = pgd(model, images, masks, e * unit, ignore_index, n, generator=pgd_gen)
                with torch.no_grad():
                    conf[f"pgd{n}_{e:.4g}"].add(logits_of(model, adv).argmax(1), masks)
    out = {f"miou_{k}": c.miou() for k, c in conf.items()}
    for k in conf:
        if k != "clean":
            out[f"drop_{k}"] = out["miou_clean"] - out[f"miou_{k}"]
    if pgd_steps:
        lo, hi = min(pgd_steps), max(pgd_steps)
        for e in pgd_eps:
            out[f"pgd_masking_{e:.4g}"] = out[f"miou_pgd{hi}_{e:.4g}"] - out[f"miou_pgd{lo}_{e:.4g}"]
            if f"miou_fgsm_{e:.4g}" in out:
                out[f"fgsm_gap_{e:.4g}"] = out[f"miou_fgsm_{e:.4g}"] - out[f"miou_pgd{lo}_{e:.4g}"]
    return out
