"""hamnet / encnet / dmnet layouts: the light Hamburger head's defaults, EncHead's laterals, DMNet's width."""

from __future__ import annotations

import torch

from segattn.models import create_model
from tests.helpers import perturb_

TINY = {"backbone": "resnet18", "channels": 16}


def test_hamnet_light_head_defaults():
    model = create_model("hamnet", 3, **TINY)
    ham = model.head.context.ham
    assert (ham.grad, ham.train_steps, ham.eval_steps, ham.num_nodes, ham.init) == ("bptt", 6, 7, 64, "random")
    assert model.head.squeeze[0].in_channels == 128 + 256 + 512  # layer2..layer4 of resnet18, all at stride 8
    paper = create_model("hamnet", 3, context_kw={"grad": "one_step"}, in_index=(-1,), **TINY)
    assert paper.head.context.ham.grad == "one_step" and paper.head.squeeze[0].in_channels == 512


def test_encnet_laterals_read_layer2_and_layer3():
    model = perturb_(create_model("encnet", 3, lateral=True, **TINY)).train()
    assert [c[0].in_channels for c in model.head.laterals] == [128, 256]
    outs = model(torch.randn(2, 3, 33, 41))
    assert outs["out"].shape == (2, 3, 33, 41) and outs["se"].shape == (2, 3)
    (outs["out"].mean() + outs["se"].mean()).backward()
    assert all(p.grad is not None for p in model.head.laterals.parameters())


def test_dmnet_width_follows_channels():
    model = create_model("dmnet", 3, **TINY)
    assert model.head.context.channels == 16 and model.head.context.filter_sizes == (1, 3, 5, 7)
