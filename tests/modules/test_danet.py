"""DANet identities (spec 1.5.5, 1.5.6) in float64."""

from __future__ import annotations

import pytest
import torch

import segattn
from segattn.bench.tensors import LargestTensorRecorder, PeakLiveRecorder
from segattn.ops.attention import reference_attention
from tests.helpers import perturb_

C = 16
D64 = torch.float64


def build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(segattn.create_module(name, C, **kwargs)).to(D64).eval()


def test_pam_equals_embedded_gaussian_nonlocal_with_copied_weights():
    pam = build("danet_pam")
    nl = build("nonlocal", reduction=8, value_channels=C, use_scale=False, norm=False)
    with torch.no_grad():
        nl.theta.load_state_dict(pam.query.state_dict())
        nl.phi.load_state_dict(pam.key.state_dict())
        nl.g.load_state_dict(pam.value.state_dict())
        nl.conv_out.weight.copy_(pam.gamma * torch.eye(C, dtype=D64).view(C, C, 1, 1))
        nl.conv_out.bias.zero_()
    x = torch.randn(2, C, 5, 7, dtype=D64)
    y = pam(x)
    torch.testing.assert_close(nl(x), y, atol=1e-10, rtol=1e-10)
    assert (y - x).abs().max() > 1e-2


def test_cam_reference_is_softmax_of_negative_energy():
    cam = build("danet_cam")
    x = torch.randn(2, C, 4, 5, dtype=D64)
    _, f = cam(x, return_attention=True)
    a = x.flatten(2)
    energy = a @ a.transpose(1, 2)
    torch.testing.assert_close(f["energy"], energy, atol=1e-12, rtol=0)
    torch.testing.assert_close(f["attention"], torch.softmax(-energy, dim=-1), atol=1e-12, rtol=0)
    assert (f["attention"] - torch.softmax(energy, dim=-1)).abs().max() > 1e-2


def test_cam_paper_mode_is_softmax_of_energy():
    cam = build("danet_cam", cam_mode="paper")
    x = torch.randn(2, C, 4, 5, dtype=D64)
    y, f = cam(x, return_attention=True)
    a = x.flatten(2)
    attention = torch.softmax(a @ a.transpose(1, 2), dim=-1)
    torch.testing.assert_close(f["attention"], attention, atol=1e-12, rtol=0)
    torch.testing.assert_close(y, x + cam.gamma * (attention @ a).view_as(x), atol=1e-12, rtol=0)


def test_cam_mode_is_checked():
    with pytest.raises(ValueError, match="cam_mode"):
        segattn.create_module("danet_cam", C, cam_mode="Paper")


@pytest.mark.parametrize("name", ["danet_pam", "danet_cam", "danet"])
def test_fresh_module_is_identity(name):
    module = segattn.create_module(name, C)
    x = torch.randn(2, C, 5, 6)
    for train in (True, False):
        module.train(train)
        assert torch.equal(module(x), x)


@pytest.mark.parametrize("name", ["danet_pam", "danet_cam", "danet"])
def test_fused_equals_naive(name):
    module = build(name)
    x = torch.randn(2, C, 6, 5, dtype=D64)
    with torch.no_grad():
        fused = module(x)
        with reference_attention():
            naive = module(x)
    torch.testing.assert_close(fused, naive, atol=1e-10, rtol=1e-10)
    assert (fused - x).abs().max() > 1e-2


def test_dual_attention_sums_branch_contexts():
    danet = build("danet")
    x = torch.randn(2, C, 4, 6, dtype=D64)
    pam_out, cam_out = danet.branches(x)
    torch.testing.assert_close(pam_out, danet.pam(x), atol=0, rtol=0)
    torch.testing.assert_close(danet(x), pam_out + cam_out - x, atol=1e-12, rtol=0)
    _, f = danet(x, return_attention=True)
    assert f["position_attention"].shape == (2, 24, 24) and f["channel_attention"].shape == (2, C, C)


def test_pam_fused_path_never_materialises_n_by_n():
    module = build("danet_pam").float().train()
    x = torch.randn(1, C, 24, 24, requires_grad=True)
    with LargestTensorRecorder() as mode:
        module(x).sum().backward()
    assert mode.largest < 24**4 // 8


def test_cam_training_holds_at_most_four_maps():
    """Forward + backward of CAM holds 4 (B, C, N) maps besides its input at its peak (as mmseg's CAM): each use of the
    input is its own view, so its gradient joins the input's at once, and the detached row max
    keeps no (C, C) energy for the backward."""
    module = build("danet_cam").float().train()
    x = torch.randn(1, C, 64, 64, requires_grad=True)
    one_map = x.numel() * 4
    with PeakLiveRecorder() as rec:
        module(x).mean().backward()
    assert rec.peak <= 4 * one_map + one_map // 4, rec.peak / one_map
