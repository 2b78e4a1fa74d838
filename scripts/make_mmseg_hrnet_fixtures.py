"""Regenerate the HRNet converter fixtures (tests/convert/fixtures/mmseg_hrnet/) from mmsegmentation 1.2.2.

Run it in a separate venv that has mmseg (never a dependency of segattn; the recipe is in the
docstring of ``scripts/make_mmseg_fixtures.py``)::

    mmseg-venv/bin/python scripts/make_mmseg_hrnet_fixtures.py [NAME ...]   # bash scripts/make_mmseg_venv.sh makes it

Unlike the ResNet fixtures, the HRNet models keep the widths of mmseg's configs (the backbone's
``extra`` stages, the heads' ``channels`` 270 / 720 / 512 and ``ocr_channels`` 256) so that the
fixtures test W18-Small, W18 and W48 exactly as mmseg builds them; only ``num_classes`` is reduced (7).
Every parameter and BN statistic takes the deterministic value of ``tests/convert/mmseg_synth.py``;
the files are

* ``NAME.json``: the merged config text (``meta["cfg"]`` of an mmseg checkpoint), the state-dict keys,
  shapes and dtypes, the dataset meta, the input sizes;
* ``NAME.npz``: mmseg's float64 logits (stored as float32) of ``encode_decode`` at each size: 50x70 (odd
  branch sizes 13x18 / 7x9 / 4x5 / 2x3: the fuse layers' second bilinear resize is exercised) and
  64x96 (branch sizes halve exactly).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_mmseg_fixtures as base  # noqa: E402
from tests.convert.mmseg_synth import synth_input, synth_tensor  # noqa: E402

OUT = os.path.join(ROOT, "tests", "convert", "fixtures", "mmseg_hrnet")
SIZES = [(50, 70), (64, 96)]
NUM_CLASSES = 7
_CITY = "4xb2-80k_cityscapes-512x1024"
FIXTURES = {
    f"fcn_hr18_{_CITY}": "hrnet",
    f"fcn_hr18s_{_CITY}": "hrnet",
    f"ocrnet_hr18_{_CITY}": "ocrnet",
    f"ocrnet_hr48_{_CITY}": "ocrnet",
}


def build_config(name: str, folder: str):
    import mmseg
    from mmengine.config import Config

    cfg = Config.fromfile(os.path.join(os.path.dirname(mmseg.__file__), ".mim", "configs", folder, name + ".py"))
    cfg.model.pretrained = None
    heads = cfg.model.decode_head if isinstance(cfg.model.decode_head, (list, tuple)) else [cfg.model.decode_head]
    for dh in heads:
        dh.num_classes = NUM_CLASSES
    base._to_bn(cfg._cfg_dict)
    return cfg


def make(name: str, folder: str) -> None:
    from mmseg.registry import MODELS

    cfg = build_config(name, folder)
    model = MODELS.build(cfg.model)
    sd = model.state_dict()
    keys = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]
    model.load_state_dict({k: synth_tensor(k, s, d) for k, s, d in keys})
    model = model.double().eval()
    arrays = {}
    with torch.no_grad():
        for size in SIZES:
            meta = [dict(img_shape=size, ori_shape=size, pad_shape=size)]
            arrays[f"logits_{size[0]}x{size[1]}"] = model.encode_decode(synth_input(name, size), meta).float().numpy()
    import mmseg

    record = {"name": name, "mmseg_version": mmseg.__version__, "cfg": cfg.pretty_text, "keys": keys, "tied": {},
              "dataset_meta": {"classes": base.CLASSES, "palette": base.PALETTE},
              "sizes": [list(s) for s in SIZES], "slide_size": None}
    path = os.path.join(OUT, name)
    with open(path + ".json.tmp", "w") as f:
        json.dump(record, f, separators=(",", ":"))
    os.replace(path + ".json.tmp", path + ".json")
    np.savez_compressed(path + ".tmp.npz", **arrays)
    os.replace(path + ".tmp.npz", path + ".npz")
    print(f"{name}: {len(keys)} tensors, {sum(int(np.prod(s)) for _, s, _ in keys)} values, "
          f"|logits| max {max(float(np.abs(a).max()) for a in arrays.values()):.3g}")


def main(argv) -> None:
    base._placeholder_ext()
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    for name in argv or list(FIXTURES):
        make(name, FIXTURES[name])


if __name__ == "__main__":
    main(sys.argv[1:])
