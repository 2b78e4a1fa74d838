"""Losses, compute_loss and module dtypes: wrong arguments give one ArgumentError."""

import pytest
import torch

import segattn
from segattn.errors import ArgumentError
from segattn.models import build_loss


@pytest.mark.parametrize("name", ["ce", "ohem", "dice", "lovasz"])
def test_class_weight_needs_one_entry_per_class(name):
    logits, target = torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 4, 4))
    for weights in ([1.0, 2.0, 3.0, 4.0], [1.0, 2.0]):
        loss = build_loss(name, class_weight=weights)
        with pytest.raises(ArgumentError, match=rf"class_weight has {len(weights)} entries but the logits have 3 classes"):
            loss(logits, target)
    assert torch.isfinite(build_loss(name, class_weight=[1.0, 2.0, 3.0])(logits, target))


@pytest.mark.parametrize("kwargs,expected", [
    (dict(class_weight=[1.0, -2.0]), r"class_weight must be a list or tuple whose items are each a finite number >= 0"),
    (dict(class_weight=["1", 2]), "class_weight must be"),
    (dict(name="focal"), "name must be one of 'ce', 'ohem', 'dice', 'lovasz'"),
    (dict(ignore_index="255"), "ignore_index must be an int"),
    (dict(name="ohem", thresh=7), r"thresh must be a finite number in \[0, 1\]"),
    (dict(name="ohem", min_kept=-1), "min_kept must be an int >= 0"),
])
def test_build_loss_checks_its_arguments(kwargs, expected):
    with pytest.raises(ArgumentError, match=expected):
        build_loss(**kwargs)


def test_compute_loss_on_eval_output_says_to_call_train():
    model = segattn.create_model("fcn", 3, backbone="resnet18", aux=False, channels=8).eval()
    logits = model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ArgumentError, match=r"compute_loss expects the train-mode outputs.*call model.train\(\)"):
        model.compute_loss(logits, torch.zeros(1, 32, 32, dtype=torch.long), build_loss())
    total, _ = model.compute_loss({"out": logits}, torch.zeros(1, 32, 32, dtype=torch.long), build_loss())
    assert torch.isfinite(total)


@pytest.mark.parametrize("name", ["nonlocal", "ema", "ccnet"])
def test_float64_input_to_a_float32_module_is_named(name):
    module = segattn.create_module(name, 16).eval()
    with pytest.raises(TypeError, match=r"has torch.float32 weights but got a torch.float64 input"):
        module(torch.randn(1, 16, 8, 8, dtype=torch.float64))
    assert module.double()(torch.randn(1, 16, 8, 8, dtype=torch.float64)).dtype == torch.float64
