"""Losses with ignored pixels: CE (class weights), OHEM, Dice, Lovasz; all-ignored batches give 0, not NaN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segattn.models.losses import build_loss

K = 4


def _data(ignore: int = 255, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, K, 5, 7, generator=g, dtype=torch.float64)
    target = torch.randint(0, K, (2, 5, 7), generator=g)
    target[0, :2] = ignore
    target[1, :, 3] = ignore
    return logits, target


def test_ce_matches_torch_with_ignore_and_weights() -> None:
    logits, target = _data()
    ref = F.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(build_loss("ce")(logits, target), ref.float(), rtol=1e-5, atol=1e-6)
    w = [0.5, 2.0, 1.0, 3.0]
    ref_w = F.cross_entropy(logits, target, ignore_index=255, weight=torch.tensor(w, dtype=torch.float64))
    torch.testing.assert_close(build_loss("ce", class_weight=w)(logits, target), ref_w.float(), rtol=1e-5, atol=1e-6)


def test_dataset_ignore_index() -> None:
    logits, target = _data(ignore=0)
    ref = F.cross_entropy(logits, target, ignore_index=0)
    torch.testing.assert_close(build_loss("ce", ignore_index=0)(logits, target), ref.float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["ce", "ohem", "dice", "lovasz"])
def test_ignored_pixels_do_not_matter(name: str) -> None:
    logits, target = _data()
    loss = build_loss(name, **({"min_kept": 10} if name == "ohem" else {}))
    changed = logits.clone()
    changed[:, :, ...][(target == 255).unsqueeze(1).expand_as(logits)] = 100.0
    torch.testing.assert_close(loss(logits, target), loss(changed, target))
    logits.requires_grad_(True)
    loss(logits, target).backward()
    assert torch.all(logits.grad.permute(0, 2, 3, 1)[target == 255] == 0)


@pytest.mark.parametrize("name", ["ce", "ohem", "dice", "lovasz"])
def test_all_ignored_gives_zero_not_nan(name: str) -> None:
    logits = torch.randn(2, K, 3, 3, requires_grad=True)
    target = torch.full((2, 3, 3), 255)
    value = build_loss(name, class_weight=[1.0, 2.0, 1.0, 1.0])(logits, target)
    assert torch.isfinite(value) and value.item() == 0.0
    value.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", ["ce", "dice", "lovasz"])
def test_perfect_prediction_is_near_zero(name: str) -> None:
    _, target = _data()
    safe = torch.where(target == 255, torch.zeros_like(target), target)
    logits = F.one_hot(safe, K).permute(0, 3, 1, 2).double() * 50.0
    assert build_loss(name)(logits, target).item() < 1e-3
    assert build_loss(name)(-logits, target).item() > 0.3


def test_ohem_keeps_hard_pixels() -> None:
    logits, target = _data()
    ce = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    valid = target != 255
    # threshold 1: every valid pixel qualifies -> plain CE
    torch.testing.assert_close(build_loss("ohem", thresh=1.0, min_kept=1)(logits, target),
                               ce[valid].mean().float(), rtol=1e-5, atol=1e-6)
    # threshold 0: exactly the min_kept hardest pixels (smallest true-class probability)
    hardest = torch.sort(ce[valid], descending=True).values[:7]
    torch.testing.assert_close(build_loss("ohem", thresh=0.0, min_kept=7)(logits, target),
                               hardest.mean().float(), rtol=1e-5, atol=1e-6)
    # threshold 0.5 with min_kept 1: the pixels with p_true <= 0.5
    p = torch.exp(-ce)
    torch.testing.assert_close(build_loss("ohem", thresh=0.5, min_kept=1)(logits, target),
                               ce[valid & (p <= 0.5)].mean().float(), rtol=1e-5, atol=1e-6)


def _lovasz_reference(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Straightforward Lovasz-softmax on the non-ignored pixels only (loops over classes)."""
    prob = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, K)
    t = target.flatten()
    keep = t != 255
    prob, t = prob[keep], t[keep]
    losses = []
    for c in range(K):
        fg = (t == c).double()
        if fg.sum() == 0:
            continue
        err = (fg - prob[:, c]).abs()
        order = torch.argsort(err, descending=True)
        e, f = err[order], fg[order]
        jac = 1 - (f.sum() - f.cumsum(0)) / (f.sum() + (1 - f).cumsum(0))
        grad = torch.cat([jac[:1], jac[1:] - jac[:-1]])
        losses.append((e * grad).sum())
    return torch.stack(losses).mean()


def test_lovasz_matches_reference() -> None:
    logits, target = _data(seed=3)
    target[target == 2] = 1  # one class absent: averaged over present classes only
    torch.testing.assert_close(build_loss("lovasz")(logits, target), _lovasz_reference(logits, target).float(),
                               rtol=1e-5, atol=1e-6)


def test_dice_value() -> None:
    logits, target = _data(seed=5)
    valid = (target != 255).unsqueeze(1).double()
    p = logits.softmax(1) * valid
    y = F.one_hot(target.clamp(max=K - 1) * (target != 255), K).permute(0, 3, 1, 2).double() * valid
    dice = 1 - (2 * (p * y).sum((0, 2, 3)) + 1) / (p.sum((0, 2, 3)) + y.sum((0, 2, 3)) + 1)
    torch.testing.assert_close(build_loss("dice")(logits, target), dice.mean().float(), rtol=1e-5, atol=1e-6)


def test_errors() -> None:
    with pytest.raises(ValueError, match="name must be one of .ce."):
        build_loss("focal")
    with pytest.raises(ValueError, match="differ"):
        build_loss("ce")(torch.randn(1, K, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        build_loss("ce")(torch.randn(1, K, 4, 4), torch.zeros(1, 4, 4))


@pytest.mark.parametrize("name", ["ce", "ohem", "dice", "lovasz"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("label", [K, -1])
def test_label_outside_the_classes_is_named(name: str, weighted: bool, label: int) -> None:
    """A label that is neither a class nor ignored ends in one line naming it (class weights or not:
    indexing the weights used to fail with a bare IndexError, torch's own loss with 'out of bounds')."""
    logits, target = _data()
    target[1, 0, 0] = label
    loss = build_loss(name, class_weight=[1.0] * K if weighted else None)
    with pytest.raises(ValueError, match=rf"label {label}, which is neither one of the logits' {K} classes"):
        loss(logits, target)
    target[1, 0, 0] = 255  # the ignore index is not a bad label
    assert torch.isfinite(loss(logits, target))
