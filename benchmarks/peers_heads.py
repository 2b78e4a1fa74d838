"""Peer cases: decode heads on one 512-channel level (a segattn model's head against mmseg's decode head)."""

from __future__ import annotations

from typing import Any, List

from peers_common import CHANNELS, NUM_CLASSES, Case, _hw, one_level

CASES: List[Case] = [
    Case("fcn_head", "head", "FCNHead, 2 convs + concat input (identical layers)"),
    Case("nl_head", "head", "NLHead (NonLocal2d between the two 3x3 convs, concat input)"),
    Case("da_head", "head", "DAHead, pam_channels 64; all three outputs in the loss"),
    Case("cc_head", "head", "CCHead, recurrence 2"),
    Case("isa_head", "head", "ISAHead, isa_channels 256, down_factor (8, 8)"),
    Case("ema_head", "head", "EMAHead ema_channels 512, channels 256, concat_input=False (ours: fc0 -> EMAU -> fc1, "
                             "mmseg adds its frozen mid conv, out conv and residual)"),
    Case("apc_head", "head", "APCHead, pool scales (1, 2, 3, 6), fusion"),
    Case("psa_head", "head", "PSANet bi-direction, mask 2h'-1 (mmseg's PSAMask is a compiled op)"),
    Case("enc_head", "head", "EncHead, 32 codes, SE layer (its logits in the loss), no laterals"),
    Case("dm_head", "head", "DMHead, filter sizes (1, 3, 5, 7), no fusion"),
    Case("gc_head", "head", "GCHead, ratio 1/4, attention pooling, channel add"),
    Case("dnl_head", "head", "DNLHead, reduction 2, temperature 0.05"),
    Case("ocr_head", "head", "OCRNet's two stages on one level: FCNHead (256, 1 conv) soft regions -> OCRHead "
                             "(ocr_channels 256); both outputs in the loss"),
    Case("ham_head", "head", "LightHamHead on one 512-channel level, ham_channels 512, NMF R 64, 6 / 7 steps, "
                             "BPTT (mmseg: fresh random bases at every forward; ours: in training only)"),
]
MMSEG_HEADS = {  # mmseg decode-head configs (PSAHead's mask size depends on the input: see build_mmseg)
    "fcn_head": dict(type="FCNHead", num_convs=2, concat_input=True),
    "nl_head": dict(type="NLHead", reduction=2, use_scale=True, mode="embedded_gaussian"),
    "da_head": dict(type="DAHead", pam_channels=64),
    "cc_head": dict(type="CCHead", recurrence=2),
    "isa_head": dict(type="ISAHead", isa_channels=256, down_factor=(8, 8)),
    "ema_head": dict(type="EMAHead", ema_channels=512, num_bases=64, num_stages=3, momentum=0.1,
                     concat_input=False, channels=256),
    "apc_head": dict(type="APCHead", pool_scales=(1, 2, 3, 6), fusion=True),
    "enc_head": dict(type="EncHead", in_channels=[CHANNELS], in_index=[0], num_codes=32, use_se_loss=True,
                     add_lateral=False),
    "dm_head": dict(type="DMHead", filter_sizes=(1, 3, 5, 7), fusion=False),
    "gc_head": dict(type="GCHead", ratio=1 / 4, pooling_type="att", fusion_types=("channel_add",)),
    "dnl_head": dict(type="DNLHead", reduction=2, use_scale=True, mode="embedded_gaussian", temperature=0.05),
    "ham_head": dict(type="LightHamHead", in_channels=[CHANNELS], in_index=[0], ham_channels=CHANNELS,
                     ham_kwargs=dict(MD_S=1, MD_R=64, train_steps=6, eval_steps=7, inv_t=100, rand_init=True)),
}
OURS = {  # head case -> (segattn model whose head is measured, its keywords)
    "fcn_head": ("fcn", {}), "nl_head": ("nonlocal", {}), "da_head": ("danet", {}), "cc_head": ("ccnet", {}),
    "isa_head": ("isanet", {}), "ema_head": ("emanet", {}), "apc_head": ("apcnet", {}),
    "psa_head": ("psanet", {}), "enc_head": ("encnet", {}), "dm_head": ("dmnet", {}),
    "gc_head": ("gcnet", {}), "dnl_head": ("dnlnet", {}),
    "ham_head": ("hamnet", {"in_index": (-1,), "norm": "bn"}),  # mmseg side built with BN here
}


def build_ours(case: str, size: str) -> Any:
    import segattn

    if case == "ocr_head":  # both stages read the one level (mmseg's case below does the same)
        from segattn.models.heads import OCRHead

        return one_level(OCRHead(CHANNELS, CHANNELS, CHANNELS, NUM_CLASSES, ocr_channels=256, region_channels=256,
                                region_index=0))
    model_name, kw = OURS[case]
    if case == "psa_head":
        h = (_hw(size)[0] - 1) // 2 + 1
        kw = {"context_kw": {"mask_size": (2 * h - 1, 2 * h - 1)}}
    # resnet18's layer4 has 512 channels: the head sees C_in = 512 like mmseg's head below.
    model = segattn.create_model(model_name, NUM_CLASSES, backbone="resnet18", aux=False, channels=CHANNELS, **kw)
    return one_level(model.head)


def _mmseg_ocr() -> Any:
    """mmseg's OCRNet stages (FCNHead soft regions -> OCRHead) on one level, returning [out, regions]."""
    import torch
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    common = dict(in_channels=CHANNELS, in_index=0, num_classes=NUM_CLASSES, dropout_ratio=0.1,
                  norm_cfg=dict(type="BN", requires_grad=True), align_corners=False)
    fcn = MODELS.build({**common, "type": "FCNHead", "channels": 256, "num_convs": 1, "concat_input": False})
    ocr = MODELS.build({**common, "type": "OCRHead", "channels": CHANNELS, "ocr_channels": 256})

    class Cascade(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fcn, self.ocr = fcn, ocr

        def forward(self, x: Any) -> Any:
            regions = self.fcn([x])
            return [self.ocr([x], regions), regions]

    return Cascade()


def build_mmseg(case: str, size: str) -> Any:
    if case == "ocr_head":
        return _mmseg_ocr()
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    common = dict(in_channels=CHANNELS, in_index=0, channels=CHANNELS, num_classes=NUM_CLASSES, dropout_ratio=0.1,
                  norm_cfg=dict(type="BN", requires_grad=True), align_corners=False)
    h = (_hw(size)[0] - 1) // 2 + 1
    cfg = MMSEG_HEADS.get(case) or dict(type="PSAHead", mask_size=(2 * h - 1, 2 * h - 1), psa_type="bi-direction",
                                        compact=False, shrink_factor=2, normalization_factor=1.0, psa_softmax=True)
    head = MODELS.build({**common, **cfg})
    return one_level(head)
