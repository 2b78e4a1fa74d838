"""Regenerate the mmseg converter fixtures (tests/convert/fixtures/mmseg/) from mmsegmentation 1.2.2.

Run it in a separate venv that has mmseg (never a dependency of segattn; recipe in docs/development.md)::

    python3 -m venv /tmp/mmseg122
    /tmp/mmseg122/bin/pip install torch==2.13.0 mmsegmentation==1.2.2 mmengine==0.10.7 mmcv-lite==2.1.0 ftfy regex
    /tmp/mmseg122/bin/python scripts/make_mmseg_fixtures.py [NAME ...]

For each covered config it builds mmseg's ``EncoderDecoder`` from the config shipped in the mmseg
wheel with reduced widths (the config's own keys: backbone ``stem_channels`` / ``base_channels``,
head ``channels`` and the module widths, ``num_classes``), fills every parameter and BN statistic with
the deterministic values of ``tests/convert/mmseg_synth.py``, and writes

* ``NAME.json``: the merged config text (``Config.pretty_text``, what mmengine stores in
  ``meta["cfg"]``), the state-dict keys, shapes and dtypes, the dataset meta, the input sizes;
* ``NAME.npz``: mmseg's float64 logits (stored as float32) of ``encode_decode`` at each size and, for
  configs whose test mode is ``slide``, of ``inference`` (the sliding window) at a larger size.

mmcv-lite has no compiled ops: a placeholder ``mmcv._ext`` is registered before mmseg is imported, and
PSAHead's ``PSAMask`` is replaced by the PyTorch port of mmcv's CPU kernel below (checked against
segattn's ``psa_mask`` when segattn is importable).
"""

from __future__ import annotations

import json
import os
import sys
import types

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tests.convert.mmseg_synth import synth_input, synth_tensor  # noqa: E402

OUT = os.path.join(ROOT, "tests", "convert", "fixtures", "mmseg")
SIZES = [(40, 56), (48, 64)]  # features 5x7 (odd; ISA pads 8x8 groups) and 6x8
SLIDE_SIZE = (56, 88)
NUM_CLASSES = 7
CLASSES = [f"class{i}" for i in range(NUM_CLASSES)]
PALETTE = [[(37 * i) % 256, (91 * i) % 256, (151 * i) % 256] for i in range(NUM_CLASSES)]

# name -> (config path under mmseg/.mim/configs, decode-head width overrides)
_CITY = "4xb2-80k_cityscapes-512x1024"
_CITY769 = "4xb2-80k_cityscapes-769x769"
FIXTURES = {
    f"fcn_r50-d8_{_CITY}": ("fcn", {}),
    f"fcn_r50-d8_{_CITY769}": ("fcn", {}),
    f"pspnet_r50-d8_{_CITY}": ("pspnet", {}),
    f"pspnet_r50-d8_{_CITY769}": ("pspnet", {}),
    f"deeplabv3_r50-d8_{_CITY}": ("deeplabv3", {}),
    f"nonlocal_r50-d8_{_CITY}": ("nonlocal_net", {}),
    f"danet_r50-d8_{_CITY}": ("danet", {"pam_channels": 8}),
    f"ccnet_r50-d8_{_CITY}": ("ccnet", {}),
    f"isanet_r50-d8_{_CITY}": ("isanet", {"isa_channels": 32}),
    f"ann_r50-d8_{_CITY}": ("ann", {"project_channels": 32}),
    f"apcnet_r50-d8_{_CITY}": ("apcnet", {}),
    f"apcnet_r50-d8_{_CITY769}": ("apcnet", {}),
    f"emanet_r50-d8_{_CITY}": ("emanet", {"channels": 32, "ema_channels": 64, "num_bases": 16}),
    f"psanet_r50-d8_{_CITY}": ("psanet", {}),
    f"psanet_r50-d8_{_CITY769}": ("psanet", {}),
    "psanet_r50-d8_4xb4-80k_ade20k-512x512": ("psanet", {}),
    f"gcnet_r50-d8_{_CITY}": ("gcnet", {}),
    f"dnl_r50-d8_{_CITY}": ("dnlnet", {}),
    "ocrnet_r101-d8_4xb2-40k_cityscapes-512x1024": ("ocrnet", {"ocr_channels": 32}),
    f"encnet_r50-d8_{_CITY}": ("encnet", {"num_codes": 8}),
    f"dmnet_r50-d8_{_CITY}": ("dmnet", {}),
    # backbone variants: ResNet-18 V1c; plain ResNet ("b") at output stride 16 with FCNHead(dilation=6)
    f"fcn_r18-d8_{_CITY}": ("fcn", {}),
    f"fcn-d6_r50b-d16_{_CITY}": ("fcn", {}),
    # output stride 32 with dilated strided stages (strides (1, 2, 2, 2), dilations (1, 1, 2, 4)): V1c, plain
    # ResNet, and the plain ResNet of the "ResNet strikes back" row
    f"pspnet_r50-d32_{_CITY}": ("pspnet", {}),
    f"pspnet_r50b-d32_{_CITY}": ("pspnet", {}),
    "pspnet_r50-d32_rsb_4xb2-adamw-80k_cityscapes-512x1024": ("pspnet", {}),
}
# fixtures of no shipped config: (the config they start from, backbone keys changed); contract_dilation=False
# (mmseg ResNet's default, unused by the zoo) on a D32 ResNet-18: first blocks take the full stage dilation
DERIVED = {f"pspnet_r18b-d32-nocontract_{_CITY}": (f"pspnet_r50b-d32_{_CITY}", {"depth": 18, "contract_dilation": False})}
FIXTURES[f"pspnet_r18b-d32-nocontract_{_CITY}"] = ("pspnet", {})
# larger inputs where the default sizes leave a 2x2 map at output stride 32: 2x3 and 3x4 here (odd maps
# on the way: 7x11 / 9x13 at stride 8, 4x6 / 5x7 at stride 16)
SIZES_OF = {name: [(56, 88), (72, 104)] for name in FIXTURES if "-d32" in name}
STEM, BASE, CHANNELS, AUX_CHANNELS = 16, 16, 64, 32


def _placeholder_ext() -> None:
    """mmcv-lite ships no ``mmcv._ext``; ops that need it fail only when called."""
    mod = types.ModuleType("mmcv._ext")

    def __getattr__(name: str):  # noqa: N807
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise RuntimeError(f"mmcv._ext.{name} needs a compiled mmcv")

        return missing

    mod.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules["mmcv._ext"] = mod


class PSAMaskPort(torch.nn.Module):
    """mmcv ``PSAMask`` forward, from the loops of its CPU kernel (``psamask_collect_forward`` /
    ``psamask_distribute_forward``): the over-complete (h_mask * w_mask) map of each position is cut
    to the (h * w) positions of the feature map, centred on that position."""

    def __init__(self, psa_type: str, mask_size) -> None:
        super().__init__()
        self.psa_type = psa_type
        self.h_mask, self.w_mask = mask_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        hm, wm = self.h_mask, self.w_mask
        half_h, half_w = (hm - 1) // 2, (wm - 1) // 2
        out = x.new_zeros(n, h * w, h, w)
        for i in range(h):
            for j in range(w):
                for a in range(max(0, half_h - i), min(hm, h + half_h - i)):
                    for b in range(max(0, half_w - j), min(wm, w + half_w - j)):
                        src = x[:, a * wm + b, i, j]
                        if self.psa_type == "collect":
                            out[:, (a + i - half_h) * w + (b + j - half_w), i, j] = src
                        else:
                            out[:, i * w + j, a + i - half_h, b + j - half_w] = src
        return out


def _to_bn(cfg):
    if isinstance(cfg, dict):
        if cfg.get("type") == "SyncBN":
            cfg["type"] = "BN"
        for v in cfg.values():
            _to_bn(v)
    elif isinstance(cfg, (list, tuple)):
        for v in cfg:
            _to_bn(v)


def build_config(name: str, folder: str, head_kw: dict):
    import mmseg
    from mmengine.config import Config

    source, changed = DERIVED.get(name, (name, {}))
    path = os.path.join(os.path.dirname(mmseg.__file__), ".mim", "configs", folder, source + ".py")
    cfg = Config.fromfile(path)
    m = cfg.model
    m.pretrained = None
    m.backbone.update(changed)
    m.backbone.update(stem_channels=STEM, base_channels=BASE)
    last = BASE * 8 * (1 if m.backbone.depth in (18, 34) else 4)
    dh = m.decode_head
    if isinstance(dh, (list, tuple)):  # CascadeEncoderDecoder (OCRNet): [FCNHead on stage 3, OCRHead]
        dh[0].update(in_channels=last // 2, channels=AUX_CHANNELS, num_classes=NUM_CLASSES)
        dh = dh[-1]
    if isinstance(dh.in_channels, (list, tuple)):  # ANN: stages 3-4; EncHead: stages 2-4
        dh.in_channels = [last >> (len(dh.in_channels) - 1 - i) for i in range(len(dh.in_channels))]
    else:
        dh.in_channels = last
    dh.update(channels=CHANNELS, num_classes=NUM_CLASSES)
    dh.update(head_kw)
    if m.get("auxiliary_head") is not None:
        m.auxiliary_head.update(in_channels=last // 2, channels=AUX_CHANNELS, num_classes=NUM_CLASSES)
    if m.test_cfg.get("mode") == "slide":
        m.test_cfg.update(crop_size=(40, 48), stride=(24, 32))
    cfg.model = m
    _to_bn(cfg._cfg_dict)
    return cfg


def make(name: str, folder: str, head_kw: dict) -> None:
    from mmseg.registry import MODELS

    cfg = build_config(name, folder, head_kw)
    model = MODELS.build(cfg.model)
    for mod in model.modules():
        if type(mod).__name__ == "PSAMask":
            raise RuntimeError("PSAMask was not replaced")
    sd = model.state_dict()
    keys = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]
    synth = {k: synth_tensor(k, s, d) for k, s, d in keys}
    model.load_state_dict(synth)
    # a module registered under two names (ANN's APNB shares key and query) holds the value of one of them
    loaded = model.state_dict()
    tied = {k: next(j for j in synth if torch.equal(synth[j], loaded[k]))
            for k in synth if not torch.equal(synth[k], loaded[k])}
    model = model.double().eval()
    arrays = {}
    with torch.no_grad():
        for size in SIZES_OF.get(name, SIZES):
            x = synth_input(name, size)
            meta = [dict(img_shape=size, ori_shape=size, pad_shape=size)]
            arrays[f"logits_{size[0]}x{size[1]}"] = model.encode_decode(x, meta).float().numpy()
        if cfg.model.test_cfg.get("mode") == "slide":
            x = synth_input(name, SLIDE_SIZE)
            meta = [dict(img_shape=SLIDE_SIZE, ori_shape=SLIDE_SIZE, pad_shape=SLIDE_SIZE)]
            arrays[f"slide_{SLIDE_SIZE[0]}x{SLIDE_SIZE[1]}"] = model.inference(x, meta).float().numpy()
    import mmseg

    record = {
        "name": name,
        "mmseg_version": mmseg.__version__,
        "cfg": cfg.pretty_text,
        "keys": keys,
        "tied": tied,
        "dataset_meta": {"classes": CLASSES, "palette": PALETTE},
        "sizes": [list(s) for s in SIZES_OF.get(name, SIZES)],
        "slide_size": list(SLIDE_SIZE) if cfg.model.test_cfg.get("mode") == "slide" else None,
    }
    base = os.path.join(OUT, name)
    with open(base + ".json.tmp", "w") as f:
        json.dump(record, f, indent=0)
    os.replace(base + ".json.tmp", base + ".json")
    np.savez_compressed(base + ".tmp.npz", **arrays)
    os.replace(base + ".tmp.npz", base + ".npz")
    print(f"{name}: {len(keys)} tensors, {sum(int(np.prod(s)) for _, s, _ in keys)} values, "
          f"|logits| max {max(float(np.abs(a).max()) for a in arrays.values()):.3g}")


def check_port() -> None:
    """The port equals segattn's ``psa_mask`` (when segattn is importable here)."""
    try:
        from segattn.modules.psanet import psa_mask
    except ImportError:
        print("segattn not importable: PSAMask port not cross-checked")
        return
    for psa_type in ("collect", "distribute"):
        for (h, w), m in (((5, 7), (9, 9)), ((3, 4), (5, 7)), ((4, 6), (97, 97))):
            x = torch.randn(2, m[0] * m[1], h, w, dtype=torch.float64)
            ours = psa_mask(x.reshape(2, m[0], m[1], h, w), psa_type)
            diff = (PSAMaskPort(psa_type, m)(x).reshape(2, h * w, h * w) - ours).abs().max().item()
            assert diff == 0.0, (psa_type, h, w, m, diff)
    print("PSAMask port == segattn psa_mask")


def main(argv) -> None:
    _placeholder_ext()
    from mmseg.models.decode_heads import psa_head
    from mmseg.utils import register_all_modules

    psa_head.PSAMask = PSAMaskPort
    register_all_modules(init_default_scope=True)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    check_port()
    names = argv or list(FIXTURES)
    for name in names:
        folder, head_kw = FIXTURES[name]
        make(name, folder, head_kw)


if __name__ == "__main__":
    main(sys.argv[1:])
