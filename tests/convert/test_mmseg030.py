"""Checkpoints as mmseg 0.30 + mmcv 1.7 write them after a 4-GPU run convert, with mmseg 0.30's logits.

The fixtures (``scripts/make_mmseg030_fixtures.py``, run beside mmseg 0.30) hold each file's meta as
mmcv wrote it: the config with ``gpu_ids = range(0, 4)``, the user's own classes and mmseg's numpy
palette, the SGD state; ``write_checkpoint`` rebuilds the file. Nothing here shares code with the
converter.
"""

from __future__ import annotations

import hashlib
import re
import warnings

import numpy as np
import pytest
import torch

import segattn
from segattn.cli import main
from segattn.convert import zoo
from segattn.convert.mmconfig import ConfigError, parse_config
from segattn.convert.mmseg import from_mmseg
from segattn.engine.evaluate import infer
from tests.convert.fixtures import write_folder_dataset
from tests.convert.fixtures030 import NAMES, decode, expected, record, state_dict, write_checkpoint
from tests.convert.mmseg_synth import synth_input
from tests.convert.test_mmseg import CONTEXT_KEY
from tests.convert.test_zoo import server  # noqa: F401 - the local HTTP server fixture

TOL = 1e-6  # relative to max |logit|: the fixtures store mmseg's float64 logits as float32
FP16 = {"loss_scaler": {"scale": 512.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                        "_growth_tracker": 0}}
HEADS = {"fcn", "pspnet", "deeplabv3", "nonlocal", "danet", "ccnet", "isanet", "ann", "apcnet", "emanet", "psanet",
         "ocrnet", "dnl", "gcnet", "encnet", "dmnet"}


def _rel(a: torch.Tensor, b: np.ndarray) -> float:
    ref = torch.from_numpy(b).double()
    return float((a - ref).abs().max() / ref.abs().max())


def _convert(path, **kw) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return from_mmseg(path, **kw).double()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = {}

    def get(name: str):
        if name not in cache:
            path = write_checkpoint(record(name), tmp_path_factory.mktemp("ckpt") / "iter_80000.pth")
            cache[name] = (path, _convert(path))
        return cache[name]

    return get


def test_fixtures_cover_every_head_and_are_distributed_runs() -> None:
    assert {n.split("_")[0] for n in NAMES} == HEADS
    assert any("769x769" in n for n in NAMES)
    for name in NAMES:
        meta = record(name)["meta"]
        assert "\ngpu_ids = range(0, 4)\n" in meta["config"] and meta["mmseg_version"].startswith("0.30.0")
        assert {"CLASSES", "PALETTE", "env_info", "seed", "exp_name", "mmcv_version", "time", "iter", "epoch",
                "hook_msgs"} <= set(meta)
        assert "__ndarray__" in meta["PALETTE"]  # custom classes: mmseg's numpy palette


@pytest.mark.parametrize("name", NAMES)
def test_logits_equal_mmseg030(name, converted) -> None:
    rec, exp = record(name), expected(name)
    _, model = converted(name)
    for h, w in rec["sizes"]:
        with torch.no_grad():
            got = model(synth_input(name, (h, w)))
        assert _rel(got, exp[f"logits_{h}x{w}"]) < TOL, (name, h, w)


@pytest.mark.parametrize("name", [n for n in NAMES if record(n)["slide_size"]])
def test_slide_inference_equals_mmseg030(name, converted) -> None:
    rec, exp = record(name), expected(name)
    _, model = converted(name)
    ev = model.pretrained_config["eval"]
    assert ev["mode"] == "slide" and model.align_corners
    h, w = rec["slide_size"]
    with torch.no_grad():
        got = infer(model, synth_input(name, (h, w)), model.num_classes, ev["mode"], ev["crop_size"], ev["stride"])
    assert _rel(got, exp[f"slide_{h}x{w}"]) < TOL


@pytest.mark.parametrize("name", [n for n in NAMES if "_r50-d8_512x1024" in n or n.startswith("ocrnet")])
def test_perturbed_context_weight_breaks_the_comparison(name, tmp_path) -> None:
    rec = record(name)
    key = CONTEXT_KEY[name.split("_")[0]]
    sd = state_dict(rec)
    flat = sd[key].clone().flatten()
    flat[::2] += 0.5
    sd[key] = flat.reshape(sd[key].shape)
    torch.save({"meta": decode(rec["meta"]), "state_dict": sd}, tmp_path / "c.pth")
    h, w = rec["sizes"][0]
    with torch.no_grad():
        got = _convert(tmp_path / "c.pth")(synth_input(name, (h, w)))
    assert _rel(got, expected(name)[f"logits_{h}x{w}"]) > 100 * TOL


@pytest.mark.parametrize("variant", ["published", "legacy", "fp16", "list_palette"])
def test_file_variants(variant, tmp_path) -> None:
    """publish_model.py's output (no optimizer), a pre-2021 file (torch < 1.6 serialisation), an fp16 run's
    meta (the loss scaler), and a dataset palette stored as lists."""
    name = "danet_r50-d8_512x1024_80k_cityscapes"
    rec = record(name)
    kw = {"published": dict(optimizer=False), "legacy": dict(optimizer=False, legacy=True),
          "fp16": dict(fp16=FP16), "list_palette": dict(PALETTE=[[1, 2, 3], [4, 5, 6], [7, 8, 9], [9, 9, 9]])}[variant]
    path = write_checkpoint(rec, tmp_path / "c.pth", **kw)
    if variant == "legacy":
        assert not __import__("zipfile").is_zipfile(path)
    model = _convert(path)
    h, w = rec["sizes"][1]
    with torch.no_grad():
        assert _rel(model(synth_input(name, (h, w))), expected(name)[f"logits_{h}x{w}"]) < TOL
    if variant == "list_palette":
        assert model.pretrained_config["palette"] == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [9, 9, 9]]


def test_classes_and_numpy_palette_carry_over(converted) -> None:
    name = "ccnet_r50-d8_512x1024_80k_cityscapes"
    _, model = converted(name)
    meta = record(name)["meta"]
    card = model.pretrained_config
    assert card["classes"] == meta["CLASSES"] == ["road", "car", "tree", "sky"]
    assert card["palette"] == meta["PALETTE"]["__ndarray__"]
    assert card["mean"] == [123.675, 116.28, 103.53] and card["std"] == [58.395, 57.12, 57.375]


def _norm_text(cfg: str, mean: str, std: str, to_rgb: str) -> str:
    pattern = r"mean=\[123\.675, 116\.28, 103\.53\],\s*std=\[58\.395, 57\.12, 57\.375\],\s*to_rgb=True"
    out, n = re.subn(pattern, f"mean={mean}, std={std}, to_rgb={to_rgb}", cfg)
    assert n >= 3  # img_norm_cfg and the Normalize step of each pipeline
    return out


def test_img_norm_cfg_is_honoured(tmp_path) -> None:
    name = "gcnet_r50-d8_512x1024_80k_cityscapes"
    rec = record(name)
    cfg = _norm_text(rec["meta"]["config"], "[1.0, 2.0, 3.0]", "[4.0, 5.0, 6.0]", "False")
    model = _convert(write_checkpoint(rec, tmp_path / "bgr.pth", config=cfg))
    card = model.pretrained_config
    assert card["mean"] == [3.0, 2.0, 1.0] and card["std"] == [6.0, 5.0, 4.0]  # BGR model: given in RGB order
    assert any("BGR" in note for note in model.mmseg_notes)
    x = synth_input(name, rec["sizes"][0])  # what mmseg's network saw, in BGR order
    ref = expected(name)[f"logits_{rec['sizes'][0][0]}x{rec['sizes'][0][1]}"]
    with torch.no_grad():
        assert _rel(model(x.flip(1)), ref) < TOL  # segattn takes the same image in RGB order
        assert _rel(model(x), ref) > 100 * TOL
    rgb = _norm_text(rec["meta"]["config"], "[0.0, 0.0, 0.0]", "[1.0, 1.0, 1.0]", "True")
    card = _convert(write_checkpoint(rec, tmp_path / "rgb.pth", config=rgb)).pretrained_config
    assert card["mean"] == [0.0, 0.0, 0.0] and card["std"] == [1.0, 1.0, 1.0]


def test_unread_lines_are_never_evaluated_but_read_ones_are_checked(tmp_path) -> None:
    name = "fcn_r18-d8_512x1024_80k_cityscapes"
    rec = record(name)
    text = rec["meta"]["config"] + "hooks = [__import__('os').system('echo never')]\n"
    _convert(write_checkpoint(rec, tmp_path / "a.pth", config=text))  # an unread line: harmless
    bad = rec["meta"]["config"].replace("test_cfg=dict(mode='whole')", "test_cfg=dict(mode=str('whole'))")
    assert bad != rec["meta"]["config"]
    with pytest.raises(ConfigError, match=r"meta\['config'\], line \d+: a call of str"):
        _convert(write_checkpoint(rec, tmp_path / "b.pth", config=bad))


def test_backbone_variants_map_onto_segattn_backbones(converted, tmp_path) -> None:
    want = {"fcn_r18-d8": ("resnet18c", 8, None), "pspnet_r18b-d8": ("resnet18", 8, None),
            "fcn_r50b-d8": ("resnet50", 8, None), "fcn_d6_r50b-d16": ("resnet50", 16, None), "deeplabv3_r101-d16-mg124": ("resnet101c", 16, (0.5, 1, 2)),
            "pspnet_r50-d32": ("resnet50c", 32, None), "pspnet_r50b-d32": ("resnet50", 32, None),
            "pspnet_r50-d32_rsb-pretrain": ("resnet50", 32, None)}
    for prefix, (backbone, stride, grid) in want.items():
        name = next(n for n in NAMES if n.startswith(prefix + "_"))
        kw = converted(name)[1].mmseg_architecture.kwargs
        assert (kw["backbone"], kw["output_stride"], kw.get("backbone_kw", {}).get("multi_grid")) == (
            backbone, stride, grid), name
        d32 = {"strides": (1, 2, 2, 2), "dilations": (1, 1, 2, 4), "contract_dilation": True}
        assert {k: kw.get("backbone_kw", {}).get(k) for k in d32} == (d32 if stride == 32 else dict.fromkeys(d32))
    assert converted("fcn_d6_r50b-d16_512x1024_80k_cityscapes")[1].mmseg_architecture.kwargs["dilation"] == 6
    for name in ("fcn_d6_r50b-d16_512x1024_80k_cityscapes", "deeplabv3_r101-d16-mg124_512x1024_80k_cityscapes",
                 "pspnet_r50b-d32_512x1024_80k_cityscapes"):
        converted(name)[1].save_pretrained(tmp_path / name)  # the saved folder rebuilds the same layout
        h, w = record(name)["sizes"][0]
        with torch.no_grad():
            got = segattn.from_pretrained(tmp_path / name).double()(synth_input(name, (h, w)))
        assert _rel(got, expected(name)[f"logits_{h}x{w}"]) < TOL


def test_zoo_name_route_reads_the_file_and_takes_config(server, tmp_path, monkeypatch) -> None:  # noqa: F811
    root, base = server
    name = "pspnet_r50-d8_512x1024_80k_cityscapes"
    rec = record(name)
    path = write_checkpoint(rec, root / f"{name}.pth")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    entry = zoo.ZooEntry(name=name, method="pspnet", model="pspnet", backbone="R-50-D8", dataset="Cityscapes",
                         crop_size=[512, 1024], iterations=80000, miou=78.55, miou_ms_flip=79.79,
                         url=f"{base}/{name}.pth", sha256_prefix=digest, config={"model": {"type": "unused"}})
    monkeypatch.setattr(zoo, "_manifest", lambda: [entry])
    cache = tmp_path / "cache"
    assert main(["convert", "mmseg", name, "--out", str(tmp_path / "a"), "--cache-dir", str(cache), "--quiet"]) == 0
    h, w = rec["sizes"][0]
    with torch.no_grad():
        got = segattn.from_pretrained(tmp_path / "a").double()(synth_input(name, (h, w)))
    assert _rel(got, expected(name)[f"logits_{h}x{w}"]) < TOL
    cfg = tmp_path / "merged.py"  # --config replaces the file's own: here with an RGB mean of 0
    cfg.write_text(_norm_text(rec["meta"]["config"], "[0.0, 0.0, 0.0]", "[1.0, 1.0, 1.0]", "True"))
    assert main(["convert", "mmseg", name, "--out", str(tmp_path / "b"), "--cache-dir", str(cache), "--quiet",
                 "--config", str(cfg)]) == 0
    assert segattn.from_pretrained(tmp_path / "b").pretrained_config["mean"] == [0.0, 0.0, 0.0]


def test_refusals_name_the_cause_and_the_way_out(tmp_path) -> None:
    rec = record("fcn_r18-d8_512x1024_80k_cityscapes")
    with pytest.raises(ConfigError, match=r"_base_ files.*--config FILE.*mmseg 0\.x: mmcv\.Config\.fromfile.*0\.x: meta\['config'\]"):
        parse_config("_base_ = ['../_base_/models/fcn_r50-d8.py']\nmodel = dict()\n", source="cfg.py")
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": state_dict(rec)}, bare)
    with pytest.raises(ConfigError, match="carries no config.*--config.*mmcv.Config.fromfile.*zoo entry by NAME"):
        _convert(bare)
    wrong = write_checkpoint(rec, tmp_path / "w.pth", CLASSES=["a", "b"])
    with pytest.raises(Exception, match="meta has 2 classes but the decode head 4; pass a config"):
        _convert(wrong)


def test_converted_0x_file_evaluates_predicts_exports_and_fine_tunes(tmp_path) -> None:
    """(``segattn viz`` needs a context module; FCN has none: the 1.x test visualises a DANet.)"""
    from PIL import Image

    name = "fcn_r18-d8_512x1024_80k_cityscapes"
    ckpt = write_checkpoint(record(name), tmp_path / "iter_80000.pth")
    out = tmp_path / "fcn18"
    assert main(["convert", "mmseg", str(ckpt), "--out", str(out)]) == 0
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--checkpoint", str(out), "--out", str(tmp_path / "pred")]) == 0
    assert any((tmp_path / "pred").iterdir())
    root = write_folder_dataset(tmp_path / "data", ["road", "car", "tree", "sky"])
    assert main(["eval", "--checkpoint", str(out), "--set", "data.dataset=folder", "--set", f"data.root={root}",
                 "--out", str(tmp_path / "eval.json")]) == 0
    assert "mIoU" in (tmp_path / "eval.json").read_text()
    assert main(["export", "--checkpoint", str(out), "--format", "onnx", "--size", "40x56",
                 "--out", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0
    kw = dict(segattn.from_pretrained(out).pretrained_config["kwargs"])  # fine-tuning: 2 new classes
    tuned = segattn.create_model("fcn", 2, **{**kw, "pretrained": str(out)})
    assert tuned.head.cls[1].out_channels == 2
