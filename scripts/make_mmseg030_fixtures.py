"""Regenerate the mmseg 0.30 converter fixtures (tests/convert/fixtures/mmseg030/) with mmseg 0.30 itself.

Run it in the venv made by ``scripts/make_mmseg030_venv.sh`` (mmsegmentation 0.30.0, mmcv 1.7.2 without
compiled ops, torch 2.13 CPU; never a dependency of segattn)::

    bash scripts/make_mmseg030_venv.sh /tmp/mmseg030
    PYTHONPATH=src /tmp/mmseg030/bin/python scripts/make_mmseg030_fixtures.py [NAME ...]

For each config (shipped in the mmseg 0.30 wheel) it builds the ``EncoderDecoder`` with reduced widths,
fills it with ``tests/convert/mmseg_synth.py``'s values, and writes the checkpoint the way
``tools/train.py`` of a 4-GPU run does: the config gets ``gpu_ids = range(0, 4)``, ``seed``,
``device``, ``work_dir``; the checkpoint hook's meta holds ``mmseg_version``, the config's
``pretty_text``, ``CLASSES`` and ``PALETTE`` (custom classes: mmseg's random numpy palette); the
runner adds ``env_info``, ``seed``, ``exp_name``, ``hook_msgs``, ``epoch``, ``iter``; mmcv's
``save_checkpoint`` adds ``mmcv_version``, ``time`` and the SGD state. The file is written by mmcv 1.7's
own ``IterBasedRunner.save_checkpoint``; the script then checks that
``tests/convert/fixtures030.write_checkpoint`` rebuilds a file that loads equal to it, and stores

* ``NAME.json``: the meta (tuples and numpy arrays tagged), optimizer param groups and buffer shapes,
  state-dict keys / shapes / module versions;
* ``NAME.npz``: mmseg 0.30's float64 logits (stored as float32) of ``encode_decode`` at two sizes and,
  for slide configs, of ``slide_inference``.

PSAHead's ``PSAMask`` needs a compiled mmcv op; it is replaced by the PyTorch port of mmcv's CPU
kernel in ``scripts/make_mmseg_fixtures.py``, checked against segattn's ``psa_mask`` when segattn is
importable (``PYTHONPATH=src``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from make_mmseg_fixtures import PSAMaskPort, _placeholder_ext, _to_bn, check_port  # noqa: E402
from tests.convert.mmseg_synth import synth_input, synth_tensor  # noqa: E402

OUT = os.path.join(ROOT, "tests", "convert", "fixtures", "mmseg030")
SIZES = [(40, 56), (32, 48)]  # features 5x7 (odd; ISA pads its 8x8 groups) and 4x6
SLIDE_SIZE = (56, 88)
CLASSES = ["road", "car", "tree", "sky"]  # a user's own classes: mmseg 0.30 draws a numpy palette
STEM, BASE, CHANNELS, AUX_CHANNELS = 16, 16, 64, 32
_C = "512x1024_80k_cityscapes"
# name -> (config folder, decode-head overrides)
FIXTURES = {
    f"fcn_r50-d8_{_C}": ("fcn", {}),
    "fcn_r50-d8_769x769_80k_cityscapes": ("fcn", {}),
    f"pspnet_r50-d8_{_C}": ("pspnet", {}),
    f"deeplabv3_r50-d8_{_C}": ("deeplabv3", {}),
    f"nonlocal_r50-d8_{_C}": ("nonlocal_net", {}),
    f"danet_r50-d8_{_C}": ("danet", {"pam_channels": 8}),
    f"ccnet_r50-d8_{_C}": ("ccnet", {}),
    f"isanet_r50-d8_{_C}": ("isanet", {"isa_channels": 32}),
    f"ann_r50-d8_{_C}": ("ann", {"project_channels": 32}),
    f"apcnet_r50-d8_{_C}": ("apcnet", {}),
    f"emanet_r50-d8_{_C}": ("emanet", {"channels": 32, "ema_channels": 64, "num_bases": 16}),
    f"psanet_r50-d8_{_C}": ("psanet", {}),
    "ocrnet_r101-d8_512x1024_80k_b16_cityscapes": ("ocrnet", {"ocr_channels": 32}),
    f"dnl_r50-d8_{_C}": ("dnlnet", {}),
    f"gcnet_r50-d8_{_C}": ("gcnet", {}),
    f"encnet_r50-d8_{_C}": ("encnet", {"num_codes": 8}),
    f"dmnet_r50-d8_{_C}": ("dmnet", {}),
    # backbone variants (issue 36): ResNet-18 V1c, plain ResNet ("b"), output stride 16 with multi-grid
    f"fcn_r18-d8_{_C}": ("fcn", {}),
    f"pspnet_r18b-d8_{_C}": ("pspnet", {}),
    f"fcn_r50b-d8_{_C}": ("fcn", {}),
    "deeplabv3_r101-d16-mg124_512x1024_80k_cityscapes": ("deeplabv3", {}),
    "fcn_d6_r50b-d16_512x1024_80k_cityscapes": ("fcn", {}),
    # output stride 32, strided stages also dilated: V1c, plain ResNet, plain ResNet of the RSB row
    f"pspnet_r50-d32_{_C}": ("pspnet", {}),
    f"pspnet_r50b-d32_{_C}": ("pspnet", {}),
    "pspnet_r50-d32_rsb-pretrain_512x1024_adamw_80k_cityscapes": ("pspnet", {}),
}
# output stride 32 leaves a 2x2 map at SIZES: 2x3 and 3x4 maps here
SIZES_OF = {name: [(56, 88), (72, 104)] for name in FIXTURES if "-d32_" in name}
SEED = 1234
FP16 = {"loss_scaler": {"scale": 512.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                        "_growth_tracker": 0}}


def build_config(name: str, folder: str, head_kw: dict):
    import mmseg
    from mmcv import Config

    cfg = Config.fromfile(os.path.join(os.path.dirname(mmseg.__file__), ".mim", "configs", folder, name + ".py"))
    m = cfg.model
    m.pretrained = None
    m.backbone.update(stem_channels=STEM, base_channels=BASE)
    last = BASE * 8 * (1 if m.backbone.depth in (18, 34) else 4)
    dh = m.decode_head
    if isinstance(dh, (list, tuple)):  # OCRNet: [FCNHead on stage 3, OCRHead]
        dh[0].update(in_channels=last // 2, channels=AUX_CHANNELS, num_classes=len(CLASSES))
        dh = dh[-1]
    if isinstance(dh.in_channels, (list, tuple)):
        dh.in_channels = [last >> (len(dh.in_channels) - 1 - i) for i in range(len(dh.in_channels))]
    else:
        dh.in_channels = last
    dh.update(channels=CHANNELS, num_classes=len(CLASSES))
    dh.update(head_kw)
    if m.get("auxiliary_head") is not None:
        m.auxiliary_head.update(in_channels=last // 2, channels=AUX_CHANNELS, num_classes=len(CLASSES))
    if m.test_cfg.get("mode") == "slide":
        m.test_cfg.update(crop_size=(40, 48), stride=(24, 32))
    _to_bn(cfg._cfg_dict)
    # what tools/train.py sets on a 4-GPU run (mmseg 0.30)
    cfg.work_dir = f"./work_dirs/{name}"
    cfg.gpu_ids = range(4)
    cfg.auto_resume = False
    cfg.device = "cuda"
    cfg.seed = SEED
    return cfg


def _encode(node):
    if isinstance(node, np.ndarray):
        return {"__ndarray__": node.tolist(), "dtype": str(node.dtype)}
    if isinstance(node, tuple):
        return {"__tuple__": [_encode(v) for v in node]}
    if isinstance(node, dict):
        return {str(k): _encode(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_encode(v) for v in node]
    if isinstance(node, torch.Tensor):
        raise TypeError("tensor in meta")
    return node


def _same(a, b, where="") -> None:
    """Deep equality of two loaded checkpoints (types included, tensors and arrays by value)."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), (where, list(a)[:5], list(b)[:5])
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
        assert getattr(a, "_metadata", None) == getattr(b, "_metadata", None), where
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def make(name: str, folder: str, head_kw: dict, env_info: str) -> None:
    import mmcv
    import mmseg
    from mmcv.runner import IterBasedRunner
    from mmcv.utils import get_logger
    from mmseg.datasets import CustomDataset
    from mmseg.models import build_segmentor
    from tests.convert import fixtures030

    cfg = build_config(name, folder, head_kw)
    model = build_segmentor(cfg.model)
    sd = model.state_dict()
    keys = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]
    synth = {k: synth_tensor(k, s, d) for k, s, d in keys}
    model.load_state_dict(synth)
    loaded = model.state_dict()
    tied = {k: next(j for j in synth if torch.equal(synth[j], loaded[k]))
            for k in synth if not torch.equal(synth[k], loaded[k])}
    # the classes and palette tools/train.py takes from its dataset (custom classes, no palette given)
    ds = CustomDataset.__new__(CustomDataset)
    ds.label_map, ds.custom_classes = None, False
    classes, palette = ds.get_classes_and_palette(CLASSES, None)
    model.CLASSES = classes
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=0.0005)
    for i, p in enumerate(params):
        optimizer.state[p]["momentum_buffer"] = synth_tensor(f"momentum:{i}", list(p.shape))
    hook_meta = dict(mmseg_version=f"{mmseg.__version__}+unknown", config=cfg.pretty_text, CLASSES=classes,
                     PALETTE=palette)
    with tempfile.TemporaryDirectory() as tmp:
        runner = IterBasedRunner(model, optimizer=optimizer, work_dir=tmp, logger=get_logger("mmseg"),
                                 meta=dict(env_info=env_info, seed=SEED, exp_name=f"{name}.py"))
        runner._iter = 80000 - 1
        runner.meta.setdefault("hook_msgs", {})["last_ckpt"] = f"./work_dirs/{name}/iter_72000.pth"
        runner.save_checkpoint(tmp, meta=hook_meta, save_optimizer=True, create_symlink=False)
        written = torch.load(os.path.join(tmp, "iter_80000.pth"), map_location="cpu", weights_only=False)
    assert "gpu_ids = range(0, 4)" in written["meta"]["config"]
    params_meta = {k: dict(v) for k, v in getattr(written["state_dict"], "_metadata", {}).items()}
    opt = written["optimizer"]
    record = {
        "name": name, "mmseg_version": mmseg.__version__, "mmcv_version": mmcv.__version__,
        "meta": _encode(written["meta"]), "keys": keys, "tied": tied, "metadata": params_meta,
        "optimizer": {"param_groups": _encode(opt["param_groups"]),
                      "state": {str(i): list(s["momentum_buffer"].shape) for i, s in opt["state"].items()}},
        "sizes": [list(s) for s in SIZES_OF.get(name, SIZES)],
        "slide_size": list(SLIDE_SIZE) if cfg.model.test_cfg.get("mode") == "slide" else None,
    }
    with tempfile.TemporaryDirectory() as tmp:  # the test-side writer rebuilds the same file
        again = fixtures030.write_checkpoint(json.loads(json.dumps(record)), os.path.join(tmp, "c.pth"))
        _same(torch.load(again, map_location="cpu", weights_only=False), written)
    model = model.double().eval()
    arrays = {}
    with torch.no_grad():
        for size in SIZES_OF.get(name, SIZES):
            x = synth_input(name, size)
            meta = [dict(img_shape=size + (3,), ori_shape=size + (3,), pad_shape=size + (3,), flip=False)]
            arrays[f"logits_{size[0]}x{size[1]}"] = model.encode_decode(x, meta).float().numpy()
        if record["slide_size"]:
            x = synth_input(name, SLIDE_SIZE)
            meta = [dict(img_shape=SLIDE_SIZE + (3,), ori_shape=SLIDE_SIZE + (3,), pad_shape=SLIDE_SIZE + (3,),
                         flip=False)]
            arrays[f"slide_{SLIDE_SIZE[0]}x{SLIDE_SIZE[1]}"] = model.slide_inference(x, meta, False).float().numpy()
    base = os.path.join(OUT, name)
    with open(base + ".json.tmp", "w") as f:
        json.dump(record, f, separators=(",", ":"))
    os.replace(base + ".json.tmp", base + ".json")
    np.savez_compressed(base + ".tmp.npz", **arrays)
    os.replace(base + ".tmp.npz", base + ".npz")
    print(f"{name}: {len(keys)} tensors, |logits| max {max(float(np.abs(a).max()) for a in arrays.values()):.3g}")


def main(argv) -> None:
    _placeholder_ext()
    ext = sys.modules["mmcv._ext"]  # collect_env asks the compiled ops for their build; there are none
    ext.get_compiler_version = ext.get_compiling_cuda_version = lambda: "n/a (mmcv built without ops)"
    from mmseg.models.decode_heads import psa_head
    from mmseg.utils import collect_env

    psa_head.PSAMask = PSAMaskPort
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    check_port()  # with PYTHONPATH=src: the port equals segattn's psa_mask
    env_info = "\n".join(f"{k}: {v}" for k, v in collect_env().items())
    for name in argv or list(FIXTURES):
        folder, head_kw = FIXTURES[name]
        make(name, folder, head_kw, env_info)


if __name__ == "__main__":
    main(sys.argv[1:])
