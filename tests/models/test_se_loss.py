"""EncNet's SE loss: class-presence targets from the label map, the head's "se" output, both loss paths."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from segattn.engine.train import Trainer
from segattn.models import create_model
from segattn.models.losses import build_loss, class_presence, class_presence_loss, output_loss
from tests.helpers import perturb_


def test_class_presence_ignores_void_and_out_of_range_labels():
    target = torch.tensor([[[0, 0, 2], [255, 2, 2]], [[1, 7, 255], [255, 255, 1]]])
    presence = class_presence(target, 4, ignore_index=255)
    assert presence.tolist() == [[1, 0, 1, 0], [0, 1, 0, 0]]
    assert class_presence(target, 4, ignore_index=2).tolist() == [[1, 0, 0, 0], [0, 1, 0, 0]]


def test_presence_loss_is_mean_binary_cross_entropy():
    logits = torch.randn(3, 5)
    target = torch.randint(0, 5, (3, 4, 6))
    target[0] = 255
    expected = F.binary_cross_entropy_with_logits(logits, class_presence(target, 5))
    torch.testing.assert_close(class_presence_loss(logits, target), expected)
    assert float(class_presence(target, 5)[0].sum()) == 0.0  # an all-void image: no class present
    with pytest.raises(ValueError, match=r"presence logits \(B, K\)"):
        class_presence_loss(torch.randn(3, 5, 2, 2), target)
    with pytest.raises(ValueError, match="unknown output loss"):
        output_loss("dice?", logits, target, build_loss())


def test_encnet_se_output_and_loss_weight():
    model = perturb_(create_model("encnet", 4, backbone="resnet18", channels=16)).train()
    x, target = torch.randn(2, 3, 33, 41), torch.randint(0, 4, (2, 33, 41))
    outs = model(x)
    assert outs["se"].shape == (2, 4) and model.loss_weights["se"] == 0.2 and model.loss_kinds == {"se": "presence"}
    total, parts = model.compute_loss(outs, target, build_loss("ce"))
    torch.testing.assert_close(parts["se"], class_presence_loss(outs["se"], target))
    ce = build_loss("ce")
    torch.testing.assert_close(total, ce(outs["out"], target) + 0.4 * ce(outs["aux"], target) + 0.2 * parts["se"])
    total.backward()
    assert model.head.se_layer.weight.grad is not None and model.head.context.encoding.codewords.grad.abs().sum() > 0
    assert "se" not in create_model("encnet", 4, backbone="resnet18", channels=16, se_loss=False).train()(x)
    assert model.eval()(x).shape == (2, 4, 33, 41)


def test_engine_compute_loss_uses_the_presence_loss():
    outs = {"out": torch.randn(2, 3, 5, 6), "se": torch.randn(2, 3)}
    target = torch.randint(0, 3, (2, 5, 6))
    target[1] = 7  # void under ignore_index 7
    fake = SimpleNamespace(loss_weights={"out": 1.0, "se": 0.2}, loss_kinds={"se": "presence"},
                           criterion=build_loss("ce", ignore_index=7), meta={"ignore_index": 7})
    terms = Trainer.compute_loss(fake, outs, target)
    se = class_presence_loss(outs["se"], target, ignore_index=7)
    torch.testing.assert_close(terms["loss_se"], se)
    torch.testing.assert_close(terms["loss"], fake.criterion(outs["out"], target) + 0.2 * se)
