"""OCR identities (spec successors A.1) in float64, beyond the registry-wide contract."""

from __future__ import annotations

import pytest
import torch

import segattn
from segattn.ops.attention import reference_attention
from tests.helpers import perturb_

C, K = 8, 4
D64 = torch.float64


def build(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs.setdefault("num_regions", K)
    return perturb_(segattn.create_module("ocr", C, **kwargs)).to(D64).eval()


def test_regions_are_softmax_over_positions_and_relations_softmax_over_regions():
    module = build()
    x = torch.randn(2, C, 5, 6, dtype=D64)
    _, f = module(x, return_attention=True)
    assert f["regions"].shape == (2, K, 30) and f["attention"].shape == (2, 30, K)
    torch.testing.assert_close(f["regions"].sum(-1), torch.ones(2, K, dtype=D64), atol=1e-12, rtol=0)
    torch.testing.assert_close(f["attention"].sum(-1), torch.ones(2, 30, dtype=D64), atol=1e-12, rtol=0)
    torch.testing.assert_close(f["regions"], torch.softmax(module.region(x).flatten(2), -1), atol=1e-12, rtol=0)


def test_one_hot_regions_gather_the_class_means():
    """The paper's 'ideal OCR': scaled one-hot ground-truth logits make F_k the mean feature of class k."""
    module = build()
    x = torch.randn(1, C, 4, 5, dtype=D64)
    labels = torch.arange(20).remainder(K).reshape(1, 4, 5)
    onehot = torch.nn.functional.one_hot(labels, K).permute(0, 3, 1, 2).to(D64)
    from segattn.modules.ocr import gather_regions, soft_regions

    feats = gather_regions(x, soft_regions(onehot * 1e4))[0, :, :, 0]  # (C, K)
    for k in range(K):
        torch.testing.assert_close(feats[:, k], x[0][:, labels[0] == k].mean(1), atol=1e-12, rtol=0)
    module(x, onehot * 1e4)  # accepted as the regions


def test_output_does_not_depend_on_the_order_of_the_regions():
    module = build(region_head=False)
    x = torch.randn(2, C, 5, 4, dtype=D64)
    logits = torch.randn(2, K, 5, 4, dtype=D64)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(module(x, logits[:, perm]), module(x, logits), atol=1e-12, rtol=0)


def test_passed_regions_replace_the_region_head():
    module = build()
    x = torch.randn(1, C, 3, 4, dtype=D64)
    logits = module.region(x)
    torch.testing.assert_close(module(x, logits), module(x), atol=0, rtol=0)
    other = torch.randn_like(logits)
    assert (module(x, other) - module(x)).abs().max() > 1e-6


def test_external_regions_are_required_and_checked():
    module = build(region_head=False)
    x = torch.randn(1, C, 3, 4, dtype=D64)
    assert not any(n.startswith("region") for n, _ in module.named_parameters())
    with pytest.raises(ValueError, match="needs the region logits"):
        module(x)
    with pytest.raises(ValueError, match="must match the input's batch and size"):
        module(x, torch.randn(1, K, 3, 5, dtype=D64))
    with pytest.raises(ValueError, match=r"\(B, K, H, W\)"):
        module(x, torch.randn(K, 3, 4, dtype=D64))


def test_any_number_of_regions_passes_and_gradients_reach_the_logits():
    module = build(region_head=False).train()
    x = torch.randn(2, C, 3, 4, dtype=D64)
    logits = torch.randn(2, 7, 3, 4, dtype=D64, requires_grad=True)
    module(x, logits).sum().backward()
    assert logits.grad is not None and logits.grad.abs().max() > 0


def test_fused_and_naive_attention_paths_agree():
    module = build().float()
    x = torch.randn(2, C, 9, 11)
    with reference_attention():
        ref = module(x)
    torch.testing.assert_close(module(x), ref, atol=1e-5, rtol=1e-5)


def test_pixel_queries_are_freed_before_the_fusion():
    """Memory: at the fusion conv only the context and [context, x] (3 maps) and the small region
    tensors are live, not the pixel queries and the attention output too (2 maps more at
    key_channels = C; one 512-channel map more, +14 % peak RSS, in mmseg's OCR head case)."""
    from tests.helpers import live_maps_before

    module = segattn.create_module("ocr", 32, key_channels=32, num_regions=4)
    assert live_maps_before(module, module.bottleneck, torch.randn(1, 32, 24, 24)) <= 3.2


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, 0.01 * x)


def test_openseg_activation_is_leaky_relu_001_after_every_bn():
    """openseg's configs all use InPlaceABN (BN then LeakyReLU(0.01)); act="leaky_relu" builds that,
    the default stays mmseg's ReLU. Checked on the block's first and last CBR with the slope written out."""
    relu, leaky = build(), build(act="leaky_relu")
    acts = [m for m in leaky.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU))]
    assert len(acts) == 7 and all(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.01 for m in acts)
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in relu.modules())
    x = torch.randn(1, C, 5, 6, dtype=D64)
    with torch.no_grad():
        q0 = leaky.query[0]
        want = _leaky(q0[1](q0[0](x)))
        torch.testing.assert_close(q0(x), want, rtol=0, atol=1e-15)
        assert not torch.allclose(leaky(x), relu(x))  # same weights (same seed), another activation


def test_bad_activation_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'relu' .*'leaky_relu'"):
        segattn.create_module("ocr", C, act="gelu")


def test_ocrnet_model_passes_the_activation_to_every_head_cbr():
    model = segattn.create_model("ocrnet", 3, backbone="resnet18", channels=16, act="leaky_relu")
    head_acts = [m for m in model.head.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU))]
    assert head_acts and all(isinstance(m, torch.nn.LeakyReLU) for m in head_acts)
    default = segattn.create_model("ocrnet", 3, backbone="resnet18", channels=16)
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in default.head.modules())
