"""mmseg HRNet checkpoints (FCN-HRNet W18-Small / W18, OCRNet-HRNet W18 / W48) convert with logits equal
to mmseg 1.2.2's in float64 at two input sizes (one with odd branch sizes); the HRNet backbone itself.

The expected logits come from mmseg (``scripts/make_mmseg_hrnet_fixtures.py``, run in a separate venv,
full widths, 7 classes); the weights are regenerated from the key names (``tests/convert/mmseg_synth.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import torch

import segattn
from segattn.cli import main
from segattn.convert.mmconfig import parse_config
from segattn.convert.mmseg import ConversionError, architecture_from_config, from_mmseg
from segattn.models.backbones import create_backbone
from segattn.models.backbones.hrnet import HRModule, HRNet, load_hrnet_weights
from tests.convert.fixtures import load_script, mmseg_available, write_folder_dataset
from tests.convert.mmseg_synth import synth_input, synth_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "mmseg_hrnet"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))
W48 = "ocrnet_hr48_4xb2-80k_cityscapes-512x1024"
TOL = 1e-6  # relative to max |logit| (mmseg's float64 logits stored as float32)


def _record(name: str) -> Dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _expected(name: str) -> Dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def _checkpoint(rec: Dict[str, Any], path: Path) -> Path:
    meta = {"cfg": rec["cfg"], "dataset_meta": rec["dataset_meta"], "mmseg_version": "1.2.2"}
    torch.save({"meta": meta, "state_dict": synth_state_dict(rec["keys"])}, path)
    return path


def _rel(a: torch.Tensor, b: np.ndarray) -> float:
    ref = torch.from_numpy(b).double()
    return float((a - ref).abs().max() / ref.abs().max())


def _max_rel(model: torch.nn.Module, name: str) -> float:
    rec, exp = _record(name), _expected(name)
    with torch.no_grad():
        return max(_rel(model(synth_input(name, (h, w))), exp[f"logits_{h}x{w}"]) for h, w in rec["sizes"])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache: Dict[str, Any] = {}

    def get(name: str):
        if name not in cache:
            path = _checkpoint(_record(name), tmp_path_factory.mktemp("ckpt") / f"{name}.pth")
            cache.clear()  # W48 is 70M values: hold one model at a time
            cache[name] = (path, from_mmseg(path).double())
        return cache[name]

    return get


def test_fixtures_cover_the_variants() -> None:
    assert {"fcn_hr18_4xb2-80k_cityscapes-512x1024", "fcn_hr18s_4xb2-80k_cityscapes-512x1024",
            "ocrnet_hr18_4xb2-80k_cityscapes-512x1024", W48} <= set(NAMES)
    for name in NAMES:
        assert (FIXTURES / f"{name}.json").stat().st_size + (FIXTURES / f"{name}.npz").stat().st_size < 1 << 20
        assert [tuple(s) for s in _record(name)["sizes"]] == [(50, 70), (64, 96)]


@pytest.mark.parametrize("name", NAMES)
def test_logits_equal_mmseg(name, converted) -> None:
    _, model = converted(name)
    assert not model.training
    want = {"hr18s": "hrnet_w18_small", "hr18": "hrnet_w18", "hr48": "hrnet_w48"}[name.split("_")[1]]
    assert model.mmseg_architecture.kwargs["backbone"] == want
    assert _max_rel(model, name) < TOL


@pytest.mark.parametrize("name", ["fcn_hr18s_4xb2-80k_cityscapes-512x1024", "ocrnet_hr18_4xb2-80k_cityscapes-512x1024"])
def test_broken_fuse_upsampling_fails_the_comparison(name, converted, monkeypatch) -> None:
    """Nearest instead of bilinear in the fuse layers, or no second resize: the logits differ."""
    _, model = converted(name)

    def nearest(y, factor, size):
        return torch.nn.functional.interpolate(y, size=tuple(size), mode="nearest")

    monkeypatch.setattr(HRModule, "upsample", staticmethod(nearest))
    assert _max_rel(model, name) > 1e-3


def test_perturbed_weight_fails_the_comparison(converted) -> None:
    name = "ocrnet_hr18_4xb2-80k_cityscapes-512x1024"
    _, model = converted(name)
    state = model.state_dict()
    key = "backbone.stage4.2.fuse_layers.0.3.0.weight"  # the 1/32 -> 1/4 branch of the last fuse
    with torch.no_grad():
        state[key][0, 0] += 0.5
    try:
        assert _max_rel(model, name) > 1e-4
    finally:
        with torch.no_grad():
            state[key][0, 0] -= 0.5


def test_architecture_from_the_config() -> None:
    cfg = parse_config(_record(W48)["cfg"])
    arch = architecture_from_config(cfg)
    assert arch.name == "ocrnet" and arch.dataset == "cityscapes" and arch.eval["mode"] == "whole"
    assert arch.kwargs == {"backbone": "hrnet_w48", "channels": 512, "ocr_channels": 256, "dropout": 0.0,
                           "aux": True, "region_channels": 720, "region_kernel": 1, "region_dropout": 0.0,
                           "region_weight": 0.4, "align_corners": False}
    fcn = architecture_from_config(parse_config(_record("fcn_hr18_4xb2-80k_cityscapes-512x1024")["cfg"]))
    assert fcn.kwargs == {"backbone": "hrnet_w18", "channels": 270, "num_convs": 1, "kernel_size": 1,
                          "concat_input": False, "dropout": 0.0, "aux": False, "align_corners": False}


def test_unsupported_hrnet_parts_are_named() -> None:
    rec = _record("ocrnet_hr18_4xb2-80k_cityscapes-512x1024")
    cases = [(lambda m: m["decode_head"][1].update(input_transform="multiple_select"), "resize_concat"),
             (lambda m: m["decode_head"][0].update(in_channels=[18, 36, 72, 128]), "branch widths"),
             (lambda m: m["decode_head"][1].update(type="PSPHead"), "only OCRNet's two stages"),
             (lambda m: m["backbone"]["extra"]["stage4"].update(num_branches=3), "1, 2, 3, 4 branches"),
             (lambda m: m.update(auxiliary_head={"type": "FCNHead"}), "auxiliary_head"),
             (lambda m: m["backbone"].update(norm_cfg={"type": "GN"}), "norm_cfg type 'GN'")]
    for change, message in cases:
        cfg = parse_config(rec["cfg"])
        change(cfg["model"])
        with pytest.raises(ConversionError, match=message):
            architecture_from_config(cfg)


def test_other_stage_layouts_go_through_backbone_kw() -> None:
    cfg = parse_config(_record("fcn_hr18_4xb2-80k_cityscapes-512x1024")["cfg"])
    cfg["model"]["backbone"]["extra"]["stage3"]["num_modules"] = 2
    arch = architecture_from_config(cfg)
    assert arch.kwargs["backbone_kw"]["stages"][2]["num_modules"] == 2
    assert len(arch.build().backbone.stage3) == 2


def test_key_mismatch_is_an_error(tmp_path) -> None:
    rec = _record("fcn_hr18s_4xb2-80k_cityscapes-512x1024")
    sd = synth_state_dict(rec["keys"])
    del sd["backbone.stage3.0.fuse_layers.2.0.1.0.weight"]
    sd["neck.extra.weight"] = torch.zeros(1)
    torch.save({"meta": {"cfg": rec["cfg"]}, "state_dict": sd}, tmp_path / "a.pth")
    with pytest.raises(ConversionError, match=r"outside backbone / decode_head: \['neck.extra.weight'\]"):
        from_mmseg(tmp_path / "a.pth")
    del sd["neck.extra.weight"]
    torch.save({"meta": {"cfg": rec["cfg"]}, "state_dict": sd}, tmp_path / "b.pth")
    with pytest.raises(ConversionError, match=r"missing \['backbone.stage3.0.fuse_layers.2.0.1.0.weight'\]"):
        from_mmseg(tmp_path / "b.pth")


def test_w48_ocrnet_converts_and_evaluates_like_the_others(tmp_path) -> None:
    """The strongest OCR checkpoints: ``segattn convert mmseg`` -> folder -> predict / eval / from_pretrained."""
    from PIL import Image

    rec = _record(W48)
    ckpt = _checkpoint(rec, tmp_path / "w48.pth")
    out = tmp_path / "w48"
    assert main(["convert", "mmseg", str(ckpt), "--out", str(out)]) == 0
    ckpt.unlink()
    model = segattn.from_pretrained(out).double()
    assert model.config["backbone"] == "hrnet_w48"
    h, w = rec["sizes"][0]
    with torch.no_grad():
        assert _rel(model(synth_input(W48, (h, w))), _expected(W48)[f"logits_{h}x{w}"]) < TOL
    del model
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--checkpoint", str(out), "--out", str(tmp_path / "pred")]) == 0
    assert any((tmp_path / "pred").iterdir())
    root = write_folder_dataset(tmp_path / "data", list(rec["dataset_meta"]["classes"]))
    assert main(["eval", "--checkpoint", str(out), "--set", "data.dataset=folder", "--set", f"data.root={root}",
                 "--out", str(tmp_path / "eval.json")]) == 0
    assert "mIoU" in (tmp_path / "eval.json").read_text()


# ----- the backbone and the models on it ------------------------------------------------------------
@pytest.mark.parametrize("name, widths, params", [("hrnet_w18_small", 18, 3.86), ("hrnet_w18", 18, 9.56),
                                                  ("hrnet_w48", 48, 65.33)])
def test_backbone_shapes_and_size(name, widths, params) -> None:
    net = create_backbone(name).eval()
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 2) == params
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 50, 70))
    assert [tuple(f.shape) for f in feats] == [(1, widths * 2**b, s[0], s[1]) for b, s in
                                               enumerate([(13, 18), (7, 9), (4, 5), (2, 3)])]
    assert net.feature_info.reduction() == [4, 8, 16, 32]


@pytest.mark.parametrize("model", ["fcn", "ocrnet", "pspnet", "danet", "encnet"])
def test_models_take_an_hrnet_backbone(model) -> None:
    net = segattn.create_model(model, 5, backbone="hrnet_w18_small", channels=32).train()
    outs = net(torch.randn(2, 3, 64, 64))
    assert outs["out"].shape == (2, 5, 64, 64) and "aux" in outs
    assert net.neck is not None and net.head is not None


def test_bad_hrnet_keywords_are_one_clear_error() -> None:
    with pytest.raises(ValueError, match="output_stride must be left unset"):
        segattn.create_model("fcn", 5, backbone="hrnet_w18", output_stride=8)
    with pytest.raises(ValueError, match="multi_grid applies to dilated ResNet"):
        segattn.create_model("fcn", 5, backbone="hrnet_w18", multi_grid=(1, 2, 4))
    with pytest.raises(ValueError, match="stage2: num_blocks"):
        HRNet([{"num_modules": 1, "num_branches": 1, "block": "BOTTLENECK", "num_blocks": (1,), "num_channels": (8,)},
               {"num_modules": 1, "num_branches": 2, "block": "BASIC", "num_blocks": (1,), "num_channels": (4, 8)},
               {}, {}])


def test_imagenet_style_weights_load(tmp_path) -> None:
    """An ImageNet HRNet file (official / mmcv ``hrnetv2_w18`` layout: the same names plus a
    classification head) loads; a file of another width is refused naming the keys."""
    net = create_backbone("hrnet_w18_small")
    state = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in net.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # files written before torch 0.4.1
    state.update({"incre_modules.0.0.conv1.weight": torch.zeros(1), "classifier.weight": torch.zeros(2, 2)})
    torch.save(state, tmp_path / "imagenet.pth")
    fresh = create_backbone("hrnet_w18_small", pretrained=str(tmp_path / "imagenet.pth"))
    assert torch.equal(fresh.state_dict()["stage4.1.fuse_layers.3.0.2.0.weight"],
                       state["stage4.1.fuse_layers.3.0.2.0.weight"])
    assert load_hrnet_weights(fresh, str(tmp_path / "imagenet.pth")) == ["incre_modules.0.0.conv1.weight",
                                                                         "classifier.weight"]
    with pytest.raises(ValueError, match="does not fit this HRNet.*other shapes"):
        create_backbone("hrnet_w48", pretrained=str(tmp_path / "imagenet.pth"))
    del state["stage2.0.branches.1.1.bn2.running_var"]
    torch.save({"state_dict": state}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing \['stage2.0.branches.1.1.bn2.running_var'\]"):
        create_backbone("hrnet_w18_small", pretrained=str(tmp_path / "partial.pth"))


def test_exported_hrnet_follows_the_input_size() -> None:
    """The fuse and concat resizes take their sizes from the tensors: a model exported with a dynamic
    size is right at another size whose branch sizes round differently (was wrong once: sizes were ints)."""
    model = segattn.create_model("fcn", 3, backbone="hrnet_w18_small", channels=16, aux=False).eval()
    dims = ({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},)  # as segattn.export
    ep = torch.export.export(model, (torch.randn(1, 3, 64, 96),), dynamic_shapes=dims)
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        assert torch.allclose(ep.module()(x), model(x), atol=1e-5, rtol=1e-4)


def test_hrnet_model_compiles_without_graph_breaks() -> None:
    model = segattn.create_model("ocrnet", 3, backbone="hrnet_w18_small", channels=16).eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not mmseg_available(), reason="mmsegmentation is not importable (not a segattn dependency)")
def test_live_against_installed_mmseg(tmp_path) -> None:  # pragma: no cover - runs only beside mmseg
    mod = load_script("make_mmseg_hrnet_fixtures")
    mod.OUT = str(tmp_path)
    mod.base._placeholder_ext()
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    name = "fcn_hr18s_4xb2-80k_cityscapes-512x1024"
    mod.make(name, mod.FIXTURES[name])
    with np.load(tmp_path / f"{name}.npz") as live:
        for key, value in _expected(name).items():
            np.testing.assert_array_equal(live[key], value)
    assert json.loads((tmp_path / f"{name}.json").read_text())["keys"] == _record(name)["keys"]


def test_run_config_builds_an_hrnet_model() -> None:
    """A training config names the backbone; its default output_stride (8) is not passed to HRNet, any
    other value is one clear error."""
    from segattn.engine.build import build_model
    from segattn.engine.config import ModelConfig

    model = build_model(ModelConfig(name="fcn", backbone="hrnet_w18_small", kwargs={"channels": 16}), 4)
    assert model.backbone.feature_info.reduction() == [4, 8, 16, 32]
    with pytest.raises(ValueError, match="output_stride must be left unset"):
        build_model(ModelConfig(name="fcn", backbone="hrnet_w18_small", output_stride=16), 4)
