"""Peer cases: mmseg zoo models (random weights) against their conversion by ``segattn convert mmseg``."""

from __future__ import annotations

import os
import sys
from typing import Any, List

from peers_common import Case, install_ext_placeholder

CASES: List[Case] = [
    # converted models: mmseg's own EncoderDecoder built from the zoo config (R50-D8, Cityscapes 512x1024, 80k)
    # with random weights and BN statistics saved as an mmseg checkpoint, against segattn's
    # segattn.convert.mmseg.from_mmseg of that file: the same weights; eval, logits resized to the input
    Case(f"{head}_converted", "converted", f"{cfg} (zoo config, same weights through `segattn convert mmseg`)")
    for head, cfg in (("fcn", "FCNHead"), ("pspnet", "PSPHead"), ("deeplabv3", "ASPPHead"), ("nonlocal", "NLHead"),
                      ("danet", "DAHead"), ("ccnet", "CCHead"), ("isanet", "ISAHead"), ("ann", "ANNHead"),
                      ("apcnet", "APCHead"), ("emanet", "EMAHead"), ("psanet", "PSAHead"), ("encnet", "EncHead"),
                      ("dmnet", "DMHead"), ("gcnet", "GCHead"), ("dnl", "DNLHead"))
]
CONVERTED_CONFIG = "{head}_r50-d8_4xb2-80k_cityscapes-512x1024"  # under mmseg/.mim/configs/<folder>/
CONVERTED_FOLDER = {"nonlocal": "nonlocal_net", "dnl": "dnlnet"}


def converted_checkpoint(case: str) -> str:
    """The mmseg checkpoint of a ``*_converted`` case (built once, cached in $PEERS_CACHE): mmseg's model
    from the shipped config (SyncBN -> BN) with deterministic random weights and BN statistics."""
    head = case[: -len("_converted")]
    name = CONVERTED_CONFIG.format(head=head)
    cache = os.environ.get("PEERS_CACHE", os.path.join("/tmp", "segattn-peers"))
    path = os.path.join(cache, name + ".pth")
    if os.path.exists(path):
        return path
    install_ext_placeholder()
    import mmseg
    import torch
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.convert.mmseg_synth import synth_tensor

    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmseg.__file__), ".mim", "configs",
                                       CONVERTED_FOLDER.get(head, head), name + ".py"))
    cfg.model.pretrained = None
    text = cfg.pretty_text.replace("type='SyncBN'", "type='BN'")
    cfg.model.backbone.norm_cfg = cfg.model.decode_head.norm_cfg = cfg.model.auxiliary_head.norm_cfg = \
        dict(type="BN", requires_grad=True)
    model = MODELS.build(cfg.model)
    model.load_state_dict({k: synth_tensor(k, list(v.shape), str(v.dtype).replace("torch.", ""))
                           for k, v in model.state_dict().items()})
    os.makedirs(cache, exist_ok=True)  # the state dict as loaded: a module under two names holds one value
    torch.save({"meta": {"cfg": text}, "state_dict": model.state_dict()}, path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


def build_converted(case: str, impl: str) -> Any:
    """Eval-mode model returning logits at the input size: segattn's conversion or mmseg's EncoderDecoder."""
    import torch

    path = converted_checkpoint(case)
    if impl == "ours":
        from segattn.convert.mmseg import from_mmseg

        return from_mmseg(path)
    install_ext_placeholder()
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    ckpt = torch.load(path, weights_only=True)
    net = MODELS.build(Config.fromstring(ckpt["meta"]["cfg"], ".py").model)
    net.load_state_dict(ckpt["state_dict"])

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            shape = tuple(x.shape[-2:])
            return self.net.encode_decode(x, [dict(img_shape=shape, ori_shape=shape, pad_shape=shape)] * len(x))

    return Model()


def build_ours(case: str, size: str) -> Any:
    return build_converted(case, "ours")


def build_mmseg(case: str, size: str) -> Any:
    return build_converted(case, "mmseg")
