"""Peer cases: single context modules (segattn's registry against mmcv / mmseg's classes)."""

from __future__ import annotations

from typing import Any, List

from peers_common import CHANNELS, Case

CASES: List[Case] = [
    Case("nonlocal", "module", "embedded Gaussian, reduction 2, scaled, BN on the output conv (mmcv NonLocal2d)"),
    Case("danet_pam", "module", "DANet PAM, q/k C/8, no scaling (mmseg da_head.PAM)"),
    Case("danet_cam", "module", "DANet CAM, max - energy (mmseg da_head.CAM)"),
    Case("ccnet", "module", "one criss-cross pass, q/k C/8 (mmcv.ops.CrissCrossAttention; ours recurrence=1)"),
    Case("gcnet", "module", "GC block, ratio 1/4, attention pooling, channel add (mmcv ContextBlock)"),
    Case("dnl", "module", "disentangled NL, reduction 2, scaled, temperature 0.05 (mmseg DisentangledNonLocal2d)"),
]


def build_ours(case: str, size: str) -> Any:
    import segattn

    return segattn.create_module(case, CHANNELS, **({"recurrence": 1} if case == "ccnet" else {}))


def build_mmseg(case: str, size: str) -> Any:
    if case == "nonlocal":
        from mmcv.cnn import NonLocal2d

        return NonLocal2d(CHANNELS, reduction=2, use_scale=True, mode="embedded_gaussian", norm_cfg=dict(type="BN"))
    if case == "danet_pam":
        from mmseg.models.decode_heads.da_head import PAM

        return PAM(CHANNELS, CHANNELS // 8)
    if case == "danet_cam":
        from mmseg.models.decode_heads.da_head import CAM

        return CAM()
    if case == "ccnet":
        from mmcv.ops import CrissCrossAttention

        return CrissCrossAttention(CHANNELS)
    if case == "gcnet":
        from mmcv.cnn import ContextBlock

        return ContextBlock(CHANNELS, 1 / 4, "att", ("channel_add",))
    if case == "dnl":
        from mmseg.models.decode_heads.dnl_head import DisentangledNonLocal2d

        return DisentangledNonLocal2d(in_channels=CHANNELS, reduction=2, use_scale=True, norm_cfg=dict(type="BN"),
                                      mode="embedded_gaussian", temperature=0.05)
    raise KeyError(case)
