"""Segmentation models check their input as context modules do: rank, channels, dtype (issue 12)."""

from __future__ import annotations

import pytest
import torch

import segattn


@pytest.fixture(scope="module")
def model():
    return segattn.create_model("fcn", num_classes=3, backbone="resnet18", channels=8).eval()


@pytest.mark.parametrize("x,error,match", [
    (torch.randn(3, 32, 32), ValueError, r"4-D input of shape \(B, C, H, W\), got a 3-D"),
    (torch.randn(1, 1, 3, 32, 32), ValueError, "got a 5-D"),
    (torch.randn(1, 4, 32, 32), ValueError, "expects 3 input channels, got 4"),
    (torch.randn(1, 1, 32, 32), ValueError, "expects 3 input channels, got 1"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, "floating-point input"),
    (torch.randn(1, 3, 32, 32, dtype=torch.float64), TypeError, "float32 weights but got a torch.float64 input"),
    ([[0.0]], TypeError, "expects a torch.Tensor"),
])
def test_bad_input_is_a_clear_error(model, x, error, match):
    with pytest.raises(error, match=match):
        model(x)


def test_good_input_and_autocast_still_work(model):
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(1, 3, 32, 32).bfloat16()).shape == (1, 3, 32, 32)
    assert model.double()(torch.randn(1, 3, 16, 16, dtype=torch.float64)).dtype == torch.float64
    model.float()


def test_in_channels_known_for_every_backbone_kind():
    m = segattn.create_model("fcn", num_classes=2, backbone="resnet18c", channels=8)
    assert m.in_channels == 3
