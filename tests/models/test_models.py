"""Every registered model on CPU: train-mode forward/backward (batch 1, two odd sizes), gradients to all
parameters, any input size, save/load round trip, torch.compile(fullgraph) and torch.export.

Tiny configuration everywhere (resnet18 backbone, head width 16) so the directory runs in minutes on
one core. No model is currently excluded from compile/export; a model that cannot be traced must be
listed in ``NOT_TRACEABLE`` with the reason.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

import segattn
from segattn.models import SegmentationModel, build_loss, call_step_hooks, create_model, from_pretrained
from segattn.registry import MODELS, MODULES, UPSAMPLERS
from tests.helpers import perturb_

MODELS_ALL = segattn.list_models()
TINY = {"backbone": "resnet18", "channels": 16}
NOT_TRACEABLE: dict = {}  # name -> reason (none at present)


def _tiny(name: str, num_classes: int = 3, **kw) -> SegmentationModel:
    return create_model(name, num_classes, **{**TINY, **kw})


@pytest.mark.parametrize("size", [(65, 97), (41, 57)])
@pytest.mark.parametrize("name", MODELS_ALL)
def test_train_forward_backward_all_parameters_get_gradients(name: str, size) -> None:
    model = perturb_(_tiny(name)).train()
    x = torch.randn(1, 3, *size)
    target = torch.randint(0, 3, (1, *size))
    target[:, :5] = 255
    outs = model(x)
    assert isinstance(outs, dict) and "out" in outs and "aux" in outs
    assert set(outs) == set(model.loss_weights)
    for key, v in outs.items():
        # maps at the input size; EncNet's "se" class-presence logits (B, K) have a loss kind instead
        assert v.shape == ((1, 3) if key in model.loss_kinds else (1, 3, *size)), key
        assert torch.isfinite(v).all(), key
    total, parts = model.compute_loss(outs, target, build_loss("ce"))
    total.backward()
    assert set(parts) == set(outs)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient for {bad}"
    if size == (65, 97):  # at 41x57 ISA's 8x8 groups leave one pixel per long-range group (softmax = 1)
        zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.any()]
        assert not zero, f"all-zero gradients (context path dead?): {zero}"


@pytest.mark.parametrize("name", MODELS_ALL)
def test_eval_logits_at_input_resolution(name: str) -> None:
    model = _tiny(name, num_classes=4).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 360, 480))
    assert isinstance(y, torch.Tensor) and y.shape == (1, 4, 360, 480)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", MODELS_ALL)
def test_save_load_round_trip(name: str, tmp_path) -> None:
    model = perturb_(_tiny(name)).eval()
    x = torch.randn(2, 3, 33, 47)
    with torch.no_grad():
        expected = model(x)
    model.save_pretrained(tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["README.md", "config.json", "model.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no temporary folders left
    with open(tmp_path / "m" / "config.json") as f:
        assert json.load(f)["name"] == name
    loaded = from_pretrained(tmp_path / "m")
    assert not loaded.training and loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
    assert segattn.from_pretrained is from_pretrained


@pytest.mark.parametrize("name", [n for n in MODELS_ALL if n not in NOT_TRACEABLE])
def test_compile_fullgraph_and_export(name: str) -> None:
    torch._dynamo.reset()
    model = _tiny(name)
    x = torch.randn(1, 3, 33, 33)
    compiled = torch.compile(model.train(), fullgraph=True, backend="eager")
    outs = compiled(x)
    assert outs["out"].shape == (1, 3, 33, 33)
    model.eval()
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))


@pytest.mark.parametrize("module", MODULES.list())
def test_generic_head_takes_every_module(module: str) -> None:
    model = _tiny("generic", context=module).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 41)).shape == (1, 3, 33, 41)


def test_every_registered_module_has_a_model() -> None:
    used = {c for n in MODELS.list() for c in MODELS.meta(n)["context"]}
    assert set(MODULES.list()) - used == set(), "a registered context module has no model in the zoo"
    upsamplers = {MODELS.meta(n).get("upsampler") for n in MODELS.list()}
    assert set(UPSAMPLERS.list()) - upsamplers == set(), "a registered upsampler has no model in the zoo"
    assert "fcn" in MODELS_ALL and "generic" in MODELS_ALL
    for name in MODELS_ALL:
        doc = MODELS.get(name).__doc__ or ""
        assert len(doc) > 150 and MODELS.meta(name)["paper"], name


@pytest.mark.parametrize("name, kw", [
    ("nonlocal", {"mode": "gaussian"}), ("nonlocal", {"mode": "dot"}), ("nonlocal", {"mode": "concat"}),
    ("ocnet", {"oc": "pyramid"}), ("ocnet", {"oc": "asp"}), ("danet", {"fused": True}),
])
def test_variants(name: str, kw: dict) -> None:
    if name not in MODELS_ALL:
        pytest.skip(f"{name} not registered yet")
    model = _tiny(name, **kw).train()
    out = model(torch.randn(1, 3, 33, 41))
    out["out"].sum().backward()


def test_aux_only_in_training_and_loss_weights() -> None:
    model = _tiny("fcn")
    assert model.loss_weights == {"out": 1.0, "aux": 0.4}
    assert isinstance(model.eval()(torch.randn(1, 3, 33, 33)), torch.Tensor)
    assert set(model.train()(torch.randn(1, 3, 33, 33))) == {"out", "aux"}
    no_aux = _tiny("fcn", aux=False, aux_weight=0.5)
    assert no_aux.aux_head is None and set(no_aux.train()(torch.randn(1, 3, 33, 33))) == {"out"}
    assert _tiny("fcn", aux_weight=0.5).loss_weights["aux"] == 0.5


def test_danet_branch_outputs() -> None:
    if "danet" not in MODELS_ALL:
        pytest.skip("danet not registered yet")
    model = _tiny("danet")
    assert model.loss_weights == {"out": 1.0, "aux": 0.4, "pam": 1.0, "cam": 1.0}
    assert set(model.train()(torch.randn(1, 3, 33, 33))) == {"out", "aux", "pam", "cam"}


@pytest.mark.parametrize("output_stride", [16, 32])
def test_output_strides(output_stride: int) -> None:
    model = _tiny("fcn", output_stride=output_stride).eval()
    assert model.backbone.feature_info.reduction()[-1] == output_stride
    assert model(torch.randn(1, 3, 50, 70)).shape == (1, 3, 50, 70)


def _aspp(model: torch.nn.Module) -> torch.nn.Module:
    return next(m for m in model.modules() if type(m).__name__ == "ASPP")


@pytest.mark.parametrize("kw, rates", [({}, (12, 24, 36)), ({"output_stride": None}, (12, 24, 36)),
                                       ({"output_stride": 16}, (6, 12, 18)),
                                       ({"backbone": "hrnet_w18_small"}, (24, 48, 72))])
def test_deeplabv3_rates_follow_the_feature_stride(kw: dict, rates: tuple) -> None:
    """ASPP's rates are (6, 12, 18) at stride 16, scaled to the map the head reads (an HRNet's is stride 4;
    output_stride=None is the default 8, not a TypeError)."""
    model = create_model("deeplabv3", num_classes=3, **{**TINY, **kw})
    assert tuple(_aspp(model).dilations) == rates


def test_hamnet_reads_an_hrnet_map_once() -> None:
    """On HRNet the light head reads the one concatenated map, not three copies of it."""
    model = create_model("hamnet", num_classes=3, backbone="hrnet_w18_small", channels=32).eval()
    width = sum(model.backbone.feature_info.channels())
    squeeze = next(m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d))
    assert squeeze.in_channels == width
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_predict() -> None:
    model = _tiny("fcn", num_classes=5).train()
    x = torch.randn(2, 3, 33, 45)
    labels = model.predict(x)
    assert labels.dtype == torch.long and labels.shape == (2, 33, 45)
    assert model.training  # flag restored
    with torch.no_grad():
        torch.testing.assert_close(labels, model.eval()(x).argmax(1))


def test_freeze_backbone_freezes_weights_and_bn_statistics() -> None:
    model = _tiny("fcn").freeze_backbone()
    model.train()
    bn = model.backbone.layer1[0].bn1
    before = bn.running_mean.clone()
    assert not bn.training and model.head.training
    outs = model(torch.randn(2, 3, 33, 33))
    sum(v.sum() for v in outs.values()).backward()
    torch.testing.assert_close(bn.running_mean, before, rtol=0, atol=0)
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    model.unfreeze_backbone().train()
    assert bn.training and all(p.requires_grad for p in model.backbone.parameters())


def test_step_hooks_reexport() -> None:
    model = _tiny("fcn")
    assert call_step_hooks(model) == 0
    if "emanet" in MODELS_ALL:
        ema = _tiny("emanet").train()
        ema(torch.randn(1, 3, 33, 33))
        assert call_step_hooks(ema) >= 1


def test_config_and_errors() -> None:
    model = _tiny("fcn", output_stride=16)
    assert model.config == {"name": "fcn", "num_classes": 3, "backbone": "resnet18", "channels": 16,
                            "output_stride": 16}
    json.dumps(model.config)
    assert segattn.list_models("fc*") == ["fcn"]
    with pytest.raises(ValueError, match="did you mean 'fcn'"):
        create_model("fcm", 3)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("fcn", 0, **TINY)
    with pytest.raises(TypeError):
        create_model("fcn", 3, backbone="resnet18", chanels=16)
    with pytest.raises(ValueError, match="expects a 4-D input"):
        model(torch.randn(3, 33, 33))
    with pytest.raises(FileNotFoundError, match="no model folder"):
        from_pretrained("/nonexistent/dir")


def test_timm_backbone() -> None:
    from segattn.models.backbones import timm_available

    if not timm_available():
        pytest.skip("timm is not importable")
    model = create_model("fcn", 3, backbone="timm:resnet18", channels=16).eval()
    assert model(torch.randn(1, 3, 33, 33)).shape == (1, 3, 33, 33)


def test_timm_adapter_with_a_stand_in_timm(monkeypatch) -> None:
    """The adapter's contract with timm (features_only, output_stride, feature_info) on a stand-in module."""
    import sys
    import types

    from segattn.models.backbones import ResNet

    calls = {}

    class FakeInfo:
        def __init__(self, net: ResNet) -> None:
            self.net = net

        def channels(self):
            return self.net.feature_info.channels()

        def reduction(self):
            return self.net.feature_info.reduction()

        def module_name(self):
            return ["act1", "layer1", "layer2", "layer3", "layer4"]

    class FakeModel(torch.nn.Module):
        def __init__(self, **kw) -> None:
            super().__init__()
            self.net = ResNet(18, output_stride=kw.get("output_stride", 32), out_indices=(0, 1, 2, 3, 4))
            self.feature_info = FakeInfo(self.net)

        def forward(self, x):
            return self.net(x)

    def create(name, **kw):
        calls.update(kw, name=name)
        return FakeModel(**kw)

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create))
    model = create_model("fcn", 3, backbone="timm:resnet18", channels=8).eval()
    assert calls["features_only"] is True and calls["pretrained"] is False and calls["output_stride"] == 8
    assert model.backbone.feature_info.channels() == [64, 128, 256, 512]
    assert model(torch.randn(1, 3, 33, 33)).shape == (1, 3, 33, 33)


def test_round_trip_keeps_nested_config(tmp_path) -> None:
    model = _tiny("generic", context="ccnet", context_kw={"recurrence": 1}, multi_grid=(1, 2), aux=False).eval()
    model.save_pretrained(tmp_path)
    loaded = from_pretrained(tmp_path)
    assert loaded.config == model.config and loaded.config["multi_grid"] == (1, 2)
    assert loaded.head.context.recurrence == 1 and loaded.aux_head is None
    assert [b.conv2.dilation[0] for b in loaded.backbone.layer4] == [4, 8]
