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


def test_light_ham_head_uses_group_norm_32_as_the_official_configs():
    """mmseg's and the authors' light-head configs: ham_norm_cfg = GN(32) in squeeze, upper bread, align."""
    model = create_model("hamnet", 3, backbone="resnet18", channels=64)
    head = model.head
    for seq in (head.squeeze, head.context.ham_out, head.align):
        assert isinstance(seq[1], torch.nn.GroupNorm) and seq[1].num_groups == 32 and seq[0].bias is None
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in head.modules())
    bn = create_model("hamnet", 3, backbone="resnet18", channels=64, norm="bn").head
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in bn.modules())
    narrow = create_model("hamnet", 3, **TINY).head  # 16 channels: gcd(32, 16) groups
    assert narrow.squeeze[1].num_groups == 16


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
