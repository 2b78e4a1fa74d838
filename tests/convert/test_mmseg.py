"""mmseg checkpoints convert with logits equal to mmseg 1.2.2's (float64, two sizes, every key used).

The expected logits come from mmseg itself (``scripts/make_mmseg_fixtures.py``, run in a separate venv);
this file shares no code with the converter. A live test rebuilds them when mmseg is importable.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import segattn
from segattn.cli import main
from segattn.convert.mmconfig import parse_config
from segattn.convert.mmseg import ConversionError, architecture_from_config, from_mmseg, save_mmseg
from segattn.engine.evaluate import infer
from segattn.errors import SegattnError
from tests.convert.fixtures import (
    NAMES,
    expected,
    load_script,
    mmseg_available,
    record,
    state_dict,
    write_checkpoint,
)
from tests.convert.mmseg_synth import synth_input

TOL = 1e-6  # relative to max |logit|; the fixtures store mmseg's float64 logits as float32 (5e-8 floor)

# one tensor of each head's context part: perturbing it must break the comparison
CONTEXT_KEY = {"fcn": "decode_head.convs.1.conv.weight", "fcn-d6": "decode_head.convs.1.conv.weight",
               "pspnet": "decode_head.psp_modules.1.1.conv.weight",
               "deeplabv3": "decode_head.aspp_modules.2.conv.weight", "nonlocal": "decode_head.nl_block.g.conv.weight",
               "danet": "decode_head.pam.value_project.weight", "ccnet": "decode_head.cca.value_conv.weight",
               "isanet": "decode_head.global_relation.value_project.weight",
               "ann": "decode_head.context.stages.0.value_project.weight",
               "apcnet": "decode_head.acm_modules.3.gla.weight", "emanet": "decode_head.ema_module.bases",
               "psanet": "decode_head.attention_p.1.weight",
               "gcnet": "decode_head.gc_block.conv_mask.weight",
               "dnl": "decode_head.dnl_block.conv_mask.weight",
               "ocrnet": "decode_head.1.object_context_block.key_project.1.conv.weight",
               "encnet": "decode_head.enc_module.encoding.0.codewords",
               "dmnet": "decode_head.dcm_modules.2.filter_gen_conv.weight"}


def _rel(a: torch.Tensor, b: np.ndarray) -> float:
    ref = torch.from_numpy(b).double()
    return float((a - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = {}

    def get(name: str):
        if name not in cache:
            path = write_checkpoint(record(name), tmp_path_factory.mktemp("ckpt") / f"{name}.pth")
            cache[name] = (path, from_mmseg(path).double())
        return cache[name]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_logits_equal_mmseg(name, converted) -> None:
    rec, exp = record(name), expected(name)
    _, model = converted(name)
    assert not model.training
    for h, w in rec["sizes"]:
        with torch.no_grad():
            got = model(synth_input(name, (h, w)))
        assert _rel(got, exp[f"logits_{h}x{w}"]) < TOL, (name, h, w)


@pytest.mark.parametrize("name", [n for n in NAMES if record(n)["slide_size"]])
def test_slide_inference_equals_mmseg(name, converted) -> None:
    rec, exp = record(name), expected(name)
    _, model = converted(name)
    ev = model.pretrained_config["eval"]
    assert ev["mode"] == "slide"
    h, w = rec["slide_size"]
    with torch.no_grad():
        got = infer(model, synth_input(name, (h, w)), model.num_classes, ev["mode"], ev["crop_size"], ev["stride"])
    assert _rel(got, exp[f"slide_{h}x{w}"]) < TOL


@pytest.mark.parametrize("name", [n for n in NAMES if "512x1024" in n or "ade20k" in n])
def test_perturbed_context_weight_breaks_the_comparison(name, tmp_path) -> None:
    """Guards against a vacuous pass: the comparison sees the context branch."""
    rec = record(name)
    key = CONTEXT_KEY[name.split("_")[0]]
    sd = state_dict(rec)
    assert key in sd
    flat = sd[key].clone().flatten()
    flat[::2] += 0.5  # not the same shift for every base: EMA's softmax over the bases would ignore it
    sd[key] = flat.reshape(sd[key].shape)
    path = tmp_path / "c.pth"
    torch.save({"meta": {"cfg": rec["cfg"]}, "state_dict": sd}, path)
    model = from_mmseg(path).double()
    h, w = rec["sizes"][0]
    with torch.no_grad():
        got = model(synth_input(name, (h, w)))
    assert _rel(got, expected(name)[f"logits_{h}x{w}"]) > 100 * TOL


def test_settings_from_the_config(converted) -> None:
    _, psa = converted("psanet_r50-d8_4xb4-80k_ade20k-512x512")
    assert psa.head.context.mask_size == (66, 66)  # mmseg's ADE20K PSANet, not 97
    _, psa_city = converted("psanet_r50-d8_4xb2-80k_cityscapes-769x769")
    assert psa_city.head.context.mask_size == (97, 97) and psa_city.align_corners
    assert psa_city.pretrained_config["eval"] == {"mode": "slide", "scales": [1.0], "flip": False,
                                                  "crop_size": [40, 48], "stride": [24, 32]}
    _, fcn = converted("fcn_r50-d8_4xb2-80k_cityscapes-512x1024")
    card = fcn.pretrained_config
    assert not fcn.align_corners and card["eval"]["mode"] == "whole" and card["dataset"] == "cityscapes"
    assert card["classes"] == record("fcn_r50-d8_4xb2-80k_cityscapes-512x1024")["dataset_meta"]["classes"]
    assert card["mean"] == [123.675, 116.28, 103.53] and card["std"] == [58.395, 57.12, 57.375]


def test_d32_backbones_keep_their_strides_and_dilations(converted) -> None:
    """The "D32" PSPNets (strides (1, 2, 2, 2) *and* dilations (1, 1, 2, 4)) reach segattn's ResNet as they
    are; the output-stride-8 layout needs no explicit per-stage values."""
    d32 = {"strides": (1, 2, 2, 2), "dilations": (1, 1, 2, 4), "contract_dilation": True}
    for name, backbone in (("pspnet_r50-d32_4xb2-80k_cityscapes-512x1024", "resnet50c"),
                           ("pspnet_r50b-d32_4xb2-80k_cityscapes-512x1024", "resnet50"),
                           ("pspnet_r50-d32_rsb_4xb2-adamw-80k_cityscapes-512x1024", "resnet50")):
        model = converted(name)[1]
        kwargs = model.mmseg_architecture.kwargs
        layout = {k: kwargs["backbone_kw"].get(k) for k in d32}  # (the fixtures' widths are reduced)
        assert (kwargs["backbone"], kwargs["output_stride"], layout) == (backbone, 32, d32), name
        net = model.backbone
        assert [(b.conv2.stride[0], b.conv2.dilation[0]) for b in net.layer4] == [(2, 2), (1, 4), (1, 4)]
        assert (net.layer3[0].conv2.stride, net.layer3[0].conv2.dilation) == ((2, 2), (1, 1))
    # contract_dilation=False (mmseg ResNet's default): first blocks take the stage's whole dilation
    loose = converted("pspnet_r18b-d32-nocontract_4xb2-80k_cityscapes-512x1024")[1]
    kwargs = loose.mmseg_architecture.kwargs
    assert (kwargs["backbone"], kwargs["backbone_kw"]["contract_dilation"]) == ("resnet18", False)
    assert [b.conv1.dilation[0] for b in loose.backbone.layer4] == [4, 4]
    assert [b.conv1.dilation[0] for b in loose.backbone.layer3] == [2, 2]
    d8 = converted("pspnet_r50-d8_4xb2-80k_cityscapes-512x1024")[1].mmseg_architecture.kwargs
    assert d8["output_stride"] == 8 and "strides" not in d8.get("backbone_kw", {})


def test_mmcv1_meta_config_and_config_file(tmp_path) -> None:
    name = "ccnet_r50-d8_4xb2-80k_cityscapes-512x1024"
    rec = record(name)
    old = write_checkpoint(rec, tmp_path / "old.pth", meta_key="config")  # mmseg 0.x stores meta["config"]
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": state_dict(rec)}, bare)
    cfg = tmp_path / "cfg.py"
    cfg.write_text(rec["cfg"])
    x = synth_input(name, rec["sizes"][0])
    ref = expected(name)["logits_40x56"]
    for model in (from_mmseg(old), from_mmseg(bare, config=cfg)):
        with torch.no_grad():
            assert _rel(model.double()(x), ref) < TOL
    with pytest.raises(SegattnError, match="carries no config.*--config"):
        from_mmseg(bare)


def test_checkpoint_that_would_run_code_is_refused(tmp_path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("this must never print",))

    rec = record("fcn_r50-d8_4xb2-80k_cityscapes-512x1024")
    path = write_checkpoint(rec, tmp_path / "evil.pth", payload=Payload())
    with pytest.raises(ValueError, match="could run code.*print"):
        from_mmseg(path)
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(ValueError, match="could run code|not a readable PyTorch file"):
        from_mmseg(raw)


def test_unsupported_parts_are_named(tmp_path) -> None:
    rec = record("fcn_r50-d8_4xb2-80k_cityscapes-512x1024")
    bad = dict(rec, cfg=rec["cfg"].replace("type='ResNetV1c'", "type='MixVisionTransformer'"))
    with pytest.raises(ConversionError, match="backbone type 'MixVisionTransformer' is not supported; supported: ResNetV1c, ResNet "):
        from_mmseg(write_checkpoint(bad, tmp_path / "bad.pth"))
    cases = [("decode_head", "type", "UPerHead", r"decode head 'UPerHead' is not supported; supported: ANNHead, .*PSAHead"),
             ("backbone", "depth", 152, "depth 152 is not supported; supported: 18, 34, 50, 101"),
             ("backbone", "avg_down", True, "avg_down=True is not supported"),
             ("backbone", "dilations", (1, 1, 2), r"strides \(1, 2, 1, 1\) / dilations \(1, 1, 2\) are not "
              "supported; supported: 4 stages, 4 ints >= 1 each"),
             ("auxiliary_head", "num_convs", 2, "auxiliary FCNHead must have"),
             ("decode_head", "num_convs", 1, "FCNHead: num_convs=1 is not supported; supported: 2"),
             ("test_cfg", "mode", "tiles", "test_cfg mode 'tiles' is not supported")]
    for part, key, value, message in cases:
        cfg = parse_config(rec["cfg"])
        cfg["model"][part][key] = value
        with pytest.raises(ConversionError, match=message):
            architecture_from_config(cfg)


def test_key_mismatch_is_an_error(tmp_path) -> None:
    rec = record("nonlocal_r50-d8_4xb2-80k_cityscapes-512x1024")
    sd = state_dict(rec)
    del sd["decode_head.nl_block.g.conv.weight"]
    sd["decode_head.extra.weight"] = torch.zeros(1)
    torch.save({"meta": {"cfg": rec["cfg"]}, "state_dict": sd}, tmp_path / "c.pth")
    with pytest.raises(ConversionError, match="missing.*context.g.weight.*unexpected.*head.extra.weight"):
        from_mmseg(tmp_path / "c.pth")


def test_converted_folder_works_everywhere(tmp_path) -> None:
    name = "danet_r50-d8_4xb2-80k_cityscapes-512x1024"
    rec = record(name)
    ckpt = write_checkpoint(rec, tmp_path / "danet.pth")
    out = tmp_path / "danet"
    assert main(["convert", "mmseg", str(ckpt), "--out", str(out)]) == 0
    assert main(["convert", "mmseg", str(ckpt), "--out", str(out)]) == 2  # never overwritten unasked
    model = segattn.from_pretrained(out).double()
    h, w = rec["sizes"][1]
    with torch.no_grad():
        assert _rel(model(synth_input(name, (h, w))), expected(name)[f"logits_{h}x{w}"]) < TOL
    card = (out / "README.md").read_text()
    assert "cityscapes" in card and "mmsegmentation checkpoint" in (out / "config.json").read_text()
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--checkpoint", str(out), "--out", str(tmp_path / "pred")]) == 0
    assert any((tmp_path / "pred").iterdir())
    # eval: the folder names its dataset (cityscapes) and eval settings; here a 7-class folder dataset instead
    root = tmp_path / "data"
    for i in range(2):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(
            root / "images" / f"{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 7, (40, 56), dtype=np.uint8)).save(root / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("\n".join(rec["dataset_meta"]["classes"]) + "\n")
    (root / "val.txt").write_text("0\n1\n")
    from segattn.models.weights import pretrained_run_config

    assert pretrained_run_config(out)["data"]["dataset"] == "cityscapes"
    assert main(["eval", "--checkpoint", str(out), "--set", "data.dataset=folder", "--set", f"data.root={root}",
                 "--out", str(tmp_path / "eval.json")]) == 0
    assert "mIoU" in (tmp_path / "eval.json").read_text()
    assert main(["viz", str(tmp_path / "a.png"), "--checkpoint", str(out), "--out", str(tmp_path / "viz")]) == 0
    assert (tmp_path / "viz" / "report.html").is_file()
    assert main(["export", "--checkpoint", str(out), "--format", "onnx", "--dynamic", "--size", "48x64",
                 "--out", str(tmp_path / "m.onnx")]) == 0  # verified on ONNX Runtime at two sizes
    # fine-tuning: the folder as model.pretrained; the classifiers start fresh for another number of classes
    kw = dict(model.pretrained_config["kwargs"])
    tuned = segattn.create_model("danet", 3, **{**kw, "pretrained": str(out)})
    assert torch.equal(tuned.state_dict()["head.pam.value.weight"].double(),
                       model.state_dict()["head.pam.value.weight"])
    assert tuned.head.cls[1].out_channels == 3
    with pytest.raises(ValueError, match="does not fit this model"):
        segattn.create_model("danet", 3, pretrained=str(out))  # default widths: not the folder's model


def test_save_mmseg_refuses_a_bad_out_before_converting(tmp_path) -> None:
    rec = record("fcn_r50-d8_4xb2-80k_cityscapes-512x1024")
    ckpt = write_checkpoint(rec, tmp_path / "c.pth")
    (tmp_path / "file").write_text("x")
    with pytest.raises(Exception, match="file"):
        save_mmseg(ckpt, tmp_path / "file" / "out")


@pytest.mark.skipif(not mmseg_available(), reason="mmsegmentation is not importable (not a segattn dependency)")
def test_live_against_installed_mmseg(tmp_path) -> None:  # pragma: no cover - runs only beside mmseg
    mod = load_script("make_mmseg_fixtures")
    mod.OUT = str(tmp_path)
    mod._placeholder_ext()
    from mmseg.models.decode_heads import psa_head
    from mmseg.utils import register_all_modules

    psa_head.PSAMask = mod.PSAMaskPort
    register_all_modules(init_default_scope=True)
    for name in ("isanet_r50-d8_4xb2-80k_cityscapes-512x1024", "psanet_r50-d8_4xb2-80k_cityscapes-512x1024"):
        folder, head_kw = mod.FIXTURES[name]
        mod.make(name, folder, head_kw)
        with np.load(tmp_path / f"{name}.npz") as live:
            for key, value in expected(name).items():
                np.testing.assert_array_equal(live[key], value)


def test_mmengine_training_state_is_skipped_not_run(tmp_path, monkeypatch) -> None:
    """A user's own ``iter_N.pth`` carries ``message_hub`` (mmengine HistoryBuffer objects with numpy
    arrays): those are replaced by inert placeholders; the same objects in ``meta`` are refused."""
    import sys
    import types

    module = types.ModuleType("mmengine.logging.history_buffer")

    class HistoryBuffer:
        def __init__(self) -> None:
            self._log_history = np.arange(5, dtype=np.float64)
            self._count_history = np.ones(5)

    HistoryBuffer.__module__ = module.__name__
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    module.HistoryBuffer = HistoryBuffer
    for name in ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer"):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    name = "emanet_r50-d8_4xb2-80k_cityscapes-512x1024"
    rec = record(name)
    hub = {"log_scalars": {"train/loss": HistoryBuffer()}, "runtime_info": {"iter": 80000}}
    path = write_checkpoint(rec, tmp_path / "iter_80000.pth", message_hub=hub,
                            optimizer={"state": {}, "param_groups": [{"lr": 0.01, "params": [0]}]})
    bad = tmp_path / "bad.pth"
    torch.save({"meta": {"cfg": rec["cfg"]}, "state_dict": {**state_dict(rec), "x": HistoryBuffer()}}, bad)
    unread = tmp_path / "unread.pth"  # training state in a part of meta the converter never reads: harmless
    torch.save({"meta": {"cfg": rec["cfg"], "x": HistoryBuffer()}, "state_dict": state_dict(rec)}, unread)
    monkeypatch.delitem(sys.modules, module.__name__)  # loading must not need (or import) it
    model = from_mmseg(path).double()
    h, w = rec["sizes"][0]
    with torch.no_grad():
        assert _rel(model(synth_input(name, (h, w))), expected(name)[f"logits_{h}x{w}"]) < TOL
    assert module.__name__ not in sys.modules
    from_mmseg(unread)
    with pytest.raises(ConversionError, match="state_dict holds objects other than tensors"):
        from_mmseg(bad)


def test_config_folder_or_binary_file_is_named(tmp_path) -> None:
    from segattn.convert.mmseg_read import read_config

    binary = tmp_path / "merged.py"
    binary.write_bytes(b"\xff\xfe\x00model")
    with pytest.raises(SegattnError, match=r"config '.*' is a folder; pass a merged config instead"):
        read_config(str(tmp_path), None)  # was: "config file ... does not exist"
    with pytest.raises(SegattnError, match=r"config '.*merged.py' is not a UTF-8 text file; pass a merged config"):
        read_config(str(binary), None)  # was: "'utf-8' codec can't decode byte 0xff in position 0"
