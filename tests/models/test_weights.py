"""Backbone checkpoint loading from torchvision, timm and mmseg/mmcv ResNet layouts (built here)."""

from __future__ import annotations

import os
from typing import Dict

import pytest
import torch
from torch import Tensor

from segattn.checkpoints import (
    detect_layout,
    load_backbone_weights,
    read_checkpoint,
    remap_resnet_state_dict,
)
from segattn.models.backbones import ResNet

PLAIN = {"stem.0.0.": "conv1.", "stem.0.1.": "bn1."}
TIMM_DEEP = {"stem.0.0.": "conv1.0.", "stem.0.1.": "conv1.1.", "stem.1.0.": "conv1.3.", "stem.1.1.": "conv1.4.",
             "stem.2.0.": "conv1.6.", "stem.2.1.": "bn1."}
MMSEG_DEEP = {"stem.0.0.": "stem.0.", "stem.0.1.": "stem.1.", "stem.1.0.": "stem.3.", "stem.1.1.": "stem.4.",
              "stem.2.0.": "stem.6.", "stem.2.1.": "stem.7."}


def _foreign(model: ResNet, table: Dict[str, str], prefix: str = "") -> Dict[str, Tensor]:
    """The model's weights renamed to a foreign layout (random values, so a wrong mapping shows)."""
    out = {}
    for k, v in model.state_dict().items():
        for ours, theirs in table.items():
            if k.startswith(ours):
                k = theirs + k[len(ours):]
                break
        out[prefix + k] = v.clone()
    return out


def _randomised(model: ResNet) -> ResNet:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return model


def _assert_same(a: ResNet, b: ResNet) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


def test_torchvision_layout(tmp_path) -> None:
    src = _randomised(ResNet(18))
    sd = _foreign(src, PLAIN)
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}  # old torchvision files
    path = tmp_path / "resnet18-tv.pth"
    torch.save(sd, path)
    dst = ResNet(18)
    report = load_backbone_weights(dst, str(path), strict=True)
    assert report.layout == "plain" and report.ok and report.ignored == ["fc.bias", "fc.weight"]
    _assert_same(src, dst)


def test_timm_deep_stem_layout(tmp_path) -> None:
    src = _randomised(ResNet(18, deep_stem=True, avg_down=True))
    path = tmp_path / "resnet18d.pth"
    torch.save({"state_dict": _foreign(src, TIMM_DEEP)}, path)
    dst = ResNet(18, deep_stem=True, avg_down=True)
    report = load_backbone_weights(dst, path, strict=True)
    assert report.layout == "timm_deep" and report.ok
    _assert_same(src, dst)


def test_mmseg_segmentor_checkpoint(tmp_path) -> None:
    src = _randomised(ResNet(18, deep_stem=True))
    sd = _foreign(src, MMSEG_DEEP, prefix="backbone.")
    sd["decode_head.conv_seg.weight"] = torch.zeros(19, 512, 1, 1)
    sd["auxiliary_head.conv_seg.weight"] = torch.zeros(19, 256, 1, 1)
    path = tmp_path / "pspnet_r18-d8.pth"
    torch.save({"meta": {"epoch": 3}, "state_dict": sd}, path)
    dst = ResNet(18, deep_stem=True)
    report = load_backbone_weights(dst, path, strict=True)
    assert report.layout == "mmseg_deep" and report.ok
    assert report.ignored == ["auxiliary_head.conv_seg.weight", "decode_head.conv_seg.weight"]
    _assert_same(src, dst)


def test_ddp_prefix_and_own_layout() -> None:
    src = _randomised(ResNet(18))
    dst = ResNet(18)
    report = load_backbone_weights(dst, {"module." + k: v for k, v in src.state_dict().items()}, strict=True)
    assert report.layout == "segattn"
    _assert_same(src, dst)


def test_url_source_uses_torch_hub(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    src = _randomised(ResNet(18))
    path = tmp_path / "resnet18-abc.pth"
    torch.save(_foreign(src, PLAIN), path)
    dst = ResNet(18, pretrained=path.as_uri())
    _assert_same(src, dst)
    assert os.path.isfile(tmp_path / "hub" / "hub" / "checkpoints" / "resnet18-abc.pth")


def test_mismatch_is_reported_clearly() -> None:
    plain = _foreign(_randomised(ResNet(18)), PLAIN)
    deep = ResNet(18, deep_stem=True)
    with pytest.raises(RuntimeError, match="missing in checkpoint") as err:
        load_backbone_weights(deep, plain, strict=True)
    assert "stem.1.0.weight" in str(err.value)
    with pytest.warns(UserWarning, match="(?s)shape mismatches.*hint: the checkpoint has a plain 7x7 stem"):
        report = load_backbone_weights(deep, plain)
    assert "stem.0.0.weight" in [m[0] for m in report.mismatched]  # 7x7 vs 3x3 kernel
    assert "stem.2.0.weight" in report.missing and report.loaded  # blocks still loaded
    torch.testing.assert_close(deep.layer1[0].conv1.weight, plain["layer1.0.conv1.weight"])


def test_in_chans_adaptation() -> None:
    src = _randomised(ResNet(18))
    dst = ResNet(18, in_chans=1)
    load_backbone_weights(dst, _foreign(src, PLAIN), strict=True)
    torch.testing.assert_close(dst.stem[0][0].weight, src.stem[0][0].weight.sum(1, keepdim=True))


def test_detect_layout_and_errors(tmp_path) -> None:
    assert detect_layout(["conv1.weight"]) == "plain"
    with pytest.raises(ValueError, match="not a ResNet checkpoint"):
        remap_resnet_state_dict({"foo.weight": torch.zeros(1)})
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        read_checkpoint(str(tmp_path / "absent.pth"))


def test_create_model_with_pretrained_backbone(tmp_path) -> None:
    import segattn

    src = _randomised(ResNet(18, deep_stem=True))
    path = tmp_path / "r18c.pth"
    torch.save(_foreign(src, MMSEG_DEEP, prefix="backbone."), path)
    model = segattn.create_model("fcn", 3, backbone="resnet18c", channels=8, pretrained=str(path))
    sd = model.backbone.state_dict()
    torch.testing.assert_close(sd["layer4.1.conv2.weight"], src.state_dict()["layer4.1.conv2.weight"])
    torch.testing.assert_close(sd["stem.1.1.running_var"], src.state_dict()["stem.1.1.running_var"])


def test_saved_model_does_not_need_the_backbone_checkpoint(tmp_path) -> None:
    import segattn

    path = tmp_path / "r18.pth"
    torch.manual_seed(7)
    torch.save(_foreign(ResNet(18), PLAIN), path)
    model = segattn.create_model("fcn", 3, backbone="resnet18", channels=8, pretrained=str(path)).eval()
    model.save_pretrained(tmp_path / "saved")
    path.unlink()
    loaded = segattn.from_pretrained(tmp_path / "saved")
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_save_is_atomic(tmp_path, monkeypatch) -> None:
    import segattn
    from segattn.models import folder  # where save_pretrained and its helpers live

    model = segattn.create_model("fcn", 3, backbone="resnet18", channels=8)
    model.save_pretrained(tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(folder, "_write_weights", broken_save)
    with pytest.raises(OSError, match="disk full"):
        segattn.create_model("fcn", 3, backbone="resnet18", channels=8).save_pretrained(tmp_path / "m", overwrite=True)
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # the temporary folder is gone
