"""Peer cases: whole models (ResNet-50 V1c, output stride 8, head + auxiliary FCN) against mmseg's EncoderDecoder."""

from __future__ import annotations

from typing import Any, List

from peers_common import NUM_CLASSES, Case
from peers_heads import MMSEG_HEADS

CASES: List[Case] = [
    # whole models: ResNet-50 V1c at output stride 8 + head + auxiliary FCN on layer3, 3-channel images of
    # SIZE x SIZE, batch --batch; train = forward, bilinear resize of every output, cross-entropy against fixed
    # random labels, backward (mmseg: EncoderDecoder.extract_feat + decode and auxiliary heads, same loss)
    Case("fcn_model", "model", "FCN: FCNHead 2 convs + concat input, channels 512"),
    Case("nonlocal_model", "model", "NLHead reduction 2, scaled, channels 512"),
    Case("danet_model", "model", "DAHead pam_channels 64, channels 512; all three outputs in the loss"),
    Case("ccnet_model", "model", "CCHead recurrence 2, channels 512"),
    Case("emanet_model", "model", "EMAHead channels 256, K 64, T 3 (mmseg keeps concat input, ours not)"),
    Case("isanet_model", "model", "ISAHead isa_channels 256, channels 512"),
]
MODEL_HEADS = {  # whole-model case -> (segattn model, mmseg decode head config)
    "fcn_model": ("fcn", MMSEG_HEADS["fcn_head"]),
    "nonlocal_model": ("nonlocal", MMSEG_HEADS["nl_head"]),
    "danet_model": ("danet", MMSEG_HEADS["da_head"]),
    "ccnet_model": ("ccnet", MMSEG_HEADS["cc_head"]),
    "emanet_model": ("emanet", {**MMSEG_HEADS["ema_head"], "concat_input": True}),  # mmseg's default layout
    "isanet_model": ("isanet", MMSEG_HEADS["isa_head"]),
}


def build_ours(case: str, size: str) -> Any:
    import segattn

    return segattn.create_model(MODEL_HEADS[case][0], NUM_CLASSES, backbone="resnet50c", output_stride=8, aux=True)


def build_mmseg_model(case: str) -> Any:
    """mmseg's EncoderDecoder parts for a whole-model case, as a module returning every output's logits."""
    import torch
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    bn = dict(type="BN", requires_grad=True)
    net = MODELS.build(dict(
        type="EncoderDecoder",
        backbone=dict(type="ResNetV1c", depth=50, num_stages=4, out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4),
                      strides=(1, 2, 1, 1), norm_cfg=bn, norm_eval=False, style="pytorch", contract_dilation=True),
        decode_head={**dict(in_channels=2048, in_index=3, channels=512, dropout_ratio=0.1, num_classes=NUM_CLASSES,
                            norm_cfg=bn, align_corners=False), **MODEL_HEADS[case][1]},
        auxiliary_head=dict(type="FCNHead", in_channels=1024, in_index=2, channels=256, num_convs=1,
                            concat_input=False, dropout_ratio=0.1, num_classes=NUM_CLASSES, norm_cfg=bn,
                            align_corners=False)))

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            feats = self.net.extract_feat(x)
            out = self.net.decode_head(feats)
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
            if self.training:
                outs.append(self.net.auxiliary_head(feats))
            return outs if self.training else outs[0]

    return Model()


def build_mmseg(case: str, size: str) -> Any:
    return build_mmseg_model(case)
