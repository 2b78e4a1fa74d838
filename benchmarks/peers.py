"""segattn against mmsegmentation 1.2.2, side by side: modules and decode heads on the same features.

mmsegmentation is never a segattn dependency: install it in its own virtual environment together with
segattn (``--no-deps``) and run this script with that environment's python (README "Peer comparison")::

    python3 -m venv ../mmseg-venv
    ../mmseg-venv/bin/pip install torch==2.13.0 mmsegmentation==1.2.2 mmengine==0.10.7 mmcv-lite==2.1.0 ftfy regex
    ../mmseg-venv/bin/pip install --no-deps -e .
    ../mmseg-venv/bin/python benchmarks/peers.py --sizes 64 97 128 --modes eval train

Method: every (case, size, mode, implementation) runs in a fresh process; the two implementations are
interleaved (their order alternates between rounds) so a busy machine's drift hits both alike. In each
process: one warm-up step at the full size, then ``--reps`` timed steps (median); the first of them
is also the memory-measured one (growth of the kernel's peak-RSS mark, reset just before the step;
glibc's mmap threshold is fixed at 64 KiB so freed tensors go back to the OS and the mark sees the
step, not the allocator's history). ``eval`` is a forward in eval mode under ``no_grad``; ``train`` is forward +
backward in train mode (to the input and every parameter) of the mean of every output. Ratios are
ours / mmseg from the same run.

mmcv-lite ships no compiled extension: a placeholder ``mmcv._ext`` whose functions raise when called
lets ``mmcv.ops`` import (its CrissCrossAttention is pure PyTorch); cases that need a compiled op
(PSAMask: PSANet) report that instead of a number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

NUM_CLASSES = 19
CHANNELS = 512


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "module", "head" or "model"
    note: str  # what is matched / where the layouts differ


CASES: Dict[str, Case] = {c.name: c for c in [
    Case("nonlocal", "module", "embedded Gaussian, reduction 2, scaled, BN on the output conv (mmcv NonLocal2d)"),
    Case("danet_pam", "module", "DANet PAM, q/k C/8, no scaling (mmseg da_head.PAM)"),
    Case("danet_cam", "module", "DANet CAM, max - energy (mmseg da_head.CAM)"),
    Case("ccnet", "module", "one criss-cross pass, q/k C/8 (mmcv.ops.CrissCrossAttention; ours recurrence=1)"),
    Case("gcnet", "module", "GC block, ratio 1/4, attention pooling, channel add (mmcv ContextBlock)"),
    Case("dnl", "module", "disentangled NL, reduction 2, scaled, temperature 0.05 (mmseg DisentangledNonLocal2d)"),
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
    # whole models: ResNet-50 V1c at output stride 8 + head + auxiliary FCN on layer3, 3-channel images of
    # SIZE x SIZE, batch --batch; train = forward, bilinear resize of every output, cross-entropy against fixed
    # random labels, backward (mmseg: EncoderDecoder.extract_feat + decode and auxiliary heads, same loss)
    Case("fcn_model", "model", "FCN: FCNHead 2 convs + concat input, channels 512"),
    Case("nonlocal_model", "model", "NLHead reduction 2, scaled, channels 512"),
    Case("danet_model", "model", "DAHead pam_channels 64, channels 512; all three outputs in the loss"),
    Case("ccnet_model", "model", "CCHead recurrence 2, channels 512"),
    Case("emanet_model", "model", "EMAHead channels 256, K 64, T 3 (mmseg keeps concat input, ours not)"),
    Case("isanet_model", "model", "ISAHead isa_channels 256, channels 512"),
] + [
    # converted models: mmseg's own EncoderDecoder built from the zoo config (R50-D8, Cityscapes 512x1024, 80k)
    # with random weights and BN statistics saved as an mmseg checkpoint, against segattn's
    # segattn.convert.mmseg.from_mmseg of that file: the same weights; eval, logits resized to the input
    Case(f"{head}_converted", "converted", f"{cfg} (zoo config, same weights through `segattn convert mmseg`)")
    for head, cfg in (("fcn", "FCNHead"), ("pspnet", "PSPHead"), ("deeplabv3", "ASPPHead"), ("nonlocal", "NLHead"),
                      ("danet", "DAHead"), ("ccnet", "CCHead"), ("isanet", "ISAHead"), ("ann", "ANNHead"),
                      ("apcnet", "APCHead"), ("emanet", "EMAHead"), ("psanet", "PSAHead"), ("encnet", "EncHead"),
                      ("dmnet", "DMHead"), ("gcnet", "GCHead"), ("dnl", "DNLHead"))
]}
CONVERTED_CONFIG = "{head}_r50-d8_4xb2-80k_cityscapes-512x1024"  # under mmseg/.mim/configs/<folder>/
CONVERTED_FOLDER = {"nonlocal": "nonlocal_net", "dnl": "dnlnet"}
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
MODEL_HEADS = {  # whole-model case -> (segattn model, mmseg decode head config)
    "fcn_model": ("fcn", MMSEG_HEADS["fcn_head"]),
    "nonlocal_model": ("nonlocal", MMSEG_HEADS["nl_head"]),
    "danet_model": ("danet", MMSEG_HEADS["da_head"]),
    "ccnet_model": ("ccnet", MMSEG_HEADS["cc_head"]),
    "emanet_model": ("emanet", {**MMSEG_HEADS["ema_head"], "concat_input": True}),  # mmseg's default layout
    "isanet_model": ("isanet", MMSEG_HEADS["isa_head"]),
}


# ------------------------------------------------------------------------------------------ builders
def _ours(case: str) -> Callable[..., Any]:
    import segattn

    if case == "nonlocal":
        return segattn.create_module("nonlocal", CHANNELS)
    if case in ("danet_pam", "danet_cam"):
        return segattn.create_module(case, CHANNELS)
    if case == "ccnet":
        return segattn.create_module("ccnet", CHANNELS, recurrence=1)
    if case in ("gcnet", "dnl"):
        return segattn.create_module(case, CHANNELS)
    if case == "ocr_head":  # both stages read the one level (mmseg's case below does the same)
        from segattn.models.heads import OCRHead

        return OCRHead(CHANNELS, CHANNELS, CHANNELS, NUM_CLASSES, ocr_channels=256, region_channels=256,
                       region_index=0)
    model_name, kw = {
        "fcn_head": ("fcn", {}), "nl_head": ("nonlocal", {}), "da_head": ("danet", {}), "cc_head": ("ccnet", {}),
        "isa_head": ("isanet", {}), "ema_head": ("emanet", {}), "apc_head": ("apcnet", {}),
        "psa_head": ("psanet", {}), "enc_head": ("encnet", {}), "dm_head": ("dmnet", {}),
        "gc_head": ("gcnet", {}), "dnl_head": ("dnlnet", {}),
        "ham_head": ("hamnet", {"in_index": (-1,), "norm": "bn"}),  # mmseg side built with BN here
    }[case]
    return model_name, kw


def _hw(size: str) -> Tuple[int, int]:
    """``"97"`` -> (97, 97); ``"512x1024"`` -> (512, 1024)."""
    h, _, w = str(size).partition("x")
    return int(h), int(w or h)


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
    import torch

    if CASES[case].kind == "converted":
        return build_converted(case, "ours")
    if CASES[case].kind == "model":
        import segattn

        return segattn.create_model(MODEL_HEADS[case][0], NUM_CLASSES, backbone="resnet50c", output_stride=8, aux=True)
    built = _ours(case)
    if isinstance(built, torch.nn.Module) and case.endswith("_head"):
        head = built
    elif not isinstance(built, tuple):
        return built
    else:
        head = None
    if head is not None:
        class OneLevel(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.head = head

            def forward(self, x: Any) -> Any:
                return list(self.head([x]).values())

        return OneLevel()
    model_name, kw = built
    if case == "psa_head":
        h = (_hw(size)[0] - 1) // 2 + 1
        kw = {"context_kw": {"mask_size": (2 * h - 1, 2 * h - 1)}}
    # resnet18's layer4 has 512 channels: the head sees C_in = 512 like mmseg's head below.
    import segattn

    model = segattn.create_model(model_name, NUM_CLASSES, backbone="resnet18", aux=False, channels=CHANNELS, **kw)
    head = model.head

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def forward(self, x: Any) -> Any:
            return list(self.head([x]).values())

    return Head()


def install_ext_placeholder() -> None:
    """Register ``mmcv._ext``: every attribute is a function that raises (mmcv-lite has no compiled ops)."""

    class _Ext(types.ModuleType):
        def __getattr__(self, name: str) -> Callable[..., Any]:
            if name.startswith("__"):
                raise AttributeError(name)

            def missing(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError(f"needs a compiled op (mmcv._ext.{name}; mmcv-lite has none)")

            return missing

    sys.modules.setdefault("mmcv._ext", _Ext("mmcv._ext"))


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
    install_ext_placeholder()
    if CASES[case].kind == "converted":
        return build_converted(case, "mmseg")
    if CASES[case].kind == "model":
        return build_mmseg_model(case)
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
    import torch

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def forward(self, x: Any) -> Any:
            out = self.head([x])
            return list(out) if isinstance(out, (tuple, list)) else [out]

    return Head()


# ------------------------------------------------------------------------------------------ worker
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _outputs(out: Any) -> List[Any]:
    if isinstance(out, dict):
        return list(out.values())
    return list(out) if isinstance(out, (list, tuple)) else [out]


def worker(impl: str, case: str, size: str, mode: str, reps: int, threads: int, batch: int = 1,
           measure: str = "time") -> Dict[str, Any]:
    """One process, one implementation: a warm-up step, then ``reps`` timed steps (the first memory-measured);
    with ``measure="tensors"`` one untimed step under ``PeakLiveRecorder`` (exact peak of live tensor bytes)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    module = build_ours(case, size) if impl == "ours" else build_mmseg(case, size)
    train = mode == "train"
    module.train(train)
    whole = CASES[case].kind in ("model", "converted")
    if CASES[case].kind == "converted" and mode != "eval":
        raise ValueError("converted models are measured in eval mode only")
    h, w = _hw(size)
    x = torch.randn(batch, 3, h, w) if whole else torch.randn(batch, CHANNELS, h, w)
    labels = torch.randint(0, NUM_CLASSES, (batch, h, w))

    def loss(outs: List[Any]) -> Any:
        if not whole:  # modules and heads: the mean of every output
            return sum(o.float().mean() for o in outs)
        return sum(F.cross_entropy(F.interpolate(o, size=(h, w), mode="bilinear", align_corners=False), labels)
                   for o in outs)

    def step() -> None:
        if train:
            xi = x if whole else x.clone().requires_grad_(True)
            loss(_outputs(module(xi))).backward()
            module.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                module(x)

    step()  # warm-up at the full size
    if measure == "tensors":
        from segattn.bench.tensors import PeakLiveRecorder

        with PeakLiveRecorder() as rec:
            step()
        return {"live_mb": rec.peak / 2**20}
    times, peak_mb = [], 0.0
    for i in range(reps):
        if i == 0:  # the first timed step is also the memory-measured one
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            base = _status_kib("VmRSS")
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
        if i == 0:
            peak_mb = (_status_kib("VmHWM") - base) / 1024
    return {"ms": statistics.median(times), "peak_mb": peak_mb}


def short_error(message: str) -> str:
    """The table's wording for the known failures of a worker; other messages cut to 160 characters."""
    if "compiled op" in message:
        return "needs a compiled op (PSAMask)"
    if "Expected more than 1 value per channel" in message:
        return "cannot train at batch 1 (BatchNorm on a 1x1 pooled branch)"
    return message[:160]


def run_worker(python: str, impl: str, case: str, size: str, mode: str, reps: int, threads: int,
               timeout: float, batch: int = 1, measure: str = "time") -> Dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MALLOC_MMAP_THRESHOLD_": "65536",
           "PYTHONWARNINGS": "ignore"}
    cmd = [python, os.path.abspath(__file__), "--worker", impl, case, str(size), mode, str(reps), str(threads),
           str(batch), measure]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"error": short_error(lines[-1] if lines else f"exit {proc.returncode}")}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ driver
def _cell(values: List[float], digits: int = 0) -> str:
    return f"{statistics.median(values):.{digits}f}" if values else "-"


def table(results: Dict[Tuple[str, str, str, str], Dict[str, Any]], cases: List[str], sizes: List[str],
          modes: List[str]) -> str:
    lines = ["| case | size | mode | ours ms | mmseg ms | time ours/mmseg | ours MiB | mmseg MiB | memory ours/mmseg |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for case in cases:
        for size in sizes:
            for mode in modes:
                o, m = results.get((case, size, mode, "ours"), {}), results.get((case, size, mode, "mmseg"), {})
                row = [case, "x".join(map(str, _hw(size))), mode]
                ot, mt = o.get("ms", []), m.get("ms", [])
                om, mm = o.get("peak_mb", []), m.get("peak_mb", [])
                row += [_cell(ot) if ot else o.get("error", "-"), _cell(mt) if mt else m.get("error", "-")]
                row.append(f"{statistics.median(ot) / statistics.median(mt):.2f}x" if ot and mt else "-")
                row += [_cell(om), _cell(mm)]
                row.append(f"{statistics.median(om) / statistics.median(mm):.2f}x" if om and mm and
                           statistics.median(mm) > 0 else "-")
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def tensor_table(results: Dict[Tuple[str, str, str, str], Dict[str, Any]], cases: List[str], sizes: List[str],
                 modes: List[str]) -> str:
    """``--tensors``: peak live tensor MiB of one step, ours against mmseg."""
    lines = ["| case | size | mode | ours tensor MiB | mmseg tensor MiB | ours/mmseg |", "|---|---|---|---:|---:|---:|"]
    for case in cases:
        for size in sizes:
            for mode in modes:
                o, m = results.get((case, size, mode, "ours"), {}), results.get((case, size, mode, "mmseg"), {})
                ol, ml = o.get("live_mb", []), m.get("live_mb", [])
                row = [case, "x".join(map(str, _hw(size))), mode, _cell(ol, 1) if ol else o.get("error", "-"),
                       _cell(ml, 1) if ml else m.get("error", "-")]
                row.append(f"{statistics.median(ol) / statistics.median(ml):.2f}x" if ol and ml else "-")
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="*", default=[c for c in CASES if CASES[c].kind not in ("model", "converted")],
                   help=f"subset of {', '.join(CASES)} (default: every module and head; whole and converted "
                        "models on request)")
    p.add_argument("--sizes", nargs="*", default=["64", "97", "128"],
                   help="N (N x N) or HxW, e.g. 512x1024 for the converted models")
    p.add_argument("--modes", nargs="*", default=["eval", "train"], choices=["eval", "train"])
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (fresh processes each)")
    p.add_argument("--reps", type=int, default=2, help="timed steps per process (median)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=1, help="batch size (whole models: 2 in the issue's protocol)")
    p.add_argument("--python", default=sys.executable, help="interpreter with segattn and mmseg (default: this one)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per process")
    p.add_argument("--out", default=None, help="write the raw results as JSON here, after every process "
                                               "(must not exist unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run recorded in --out: its finished "
                                                         "processes are kept, the rest run")
    p.add_argument("--tensors", action="store_true",
                   help="instead of time and resident memory: the exact peak of live tensor bytes of one step "
                        "(segattn.bench.tensors.PeakLiveRecorder; independent of load and allocator)")
    p.add_argument("--worker", nargs=8, metavar=("IMPL", "CASE", "SIZE", "MODE", "REPS", "THREADS", "BATCH", "MEASURE"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        impl, case, size, mode, reps, threads, batch, measure = args.worker
        print(json.dumps(worker(impl, case, size, mode, int(reps), int(threads), int(batch), measure)))
        return 0
    try:
        args.sizes = ["x".join(map(str, _hw(sz))) if "x" in sz else str(int(sz)) for sz in args.sizes]
    except ValueError:
        p.error(f"--sizes takes N or HxW (positive integers), got {args.sizes}")
    bad = [c for c in args.cases if c not in CASES]
    if bad:
        p.error(f"unknown case(s) {bad}; expected some of {list(CASES)}")
    if args.resume and not args.out:
        p.error("--resume needs --out (the run to continue)")
    if args.out and os.path.exists(args.out) and not args.resume:
        p.error(f"--out {args.out} exists; pick a new path, or add --resume to continue it")
    settings = {"threads": args.threads, "reps": args.reps, "batch": args.batch, "tensors": args.tensors}
    records: List[Dict[str, Any]] = []
    if args.resume and os.path.exists(args.out):
        try:
            with open(args.out) as f:
                saved = json.load(f)
            records = list(saved["records"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            p.error(f"--out {args.out} is not a run of this script ({type(exc).__name__}: {exc})")
        if saved.get("settings") != settings:
            p.error(f"--out {args.out} was run with {saved.get('settings')}, not {settings}; resume with those")
    probe = subprocess.run([args.python, "-c", "import mmseg, segattn; print(mmseg.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        p.error(f"{args.python} cannot import both mmseg and segattn; see the recipe in this file's docstring")
    cmd = "python benchmarks/peers.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    print(f"mmseg {probe.stdout.strip()}, {args.threads} thread(s), {args.rounds} interleaved round(s) of fresh "
          f"processes, median of {args.reps} timed steps each; batch {args.batch}, {CHANNELS} channels "
          "(whole models: 3-channel images)", flush=True)
    done = {(r["round"], r["case"], str(r["size"]), r["mode"], r["impl"]) for r in records}
    jobs = [(r, case, size, mode, impl) for r in range(args.rounds) for case in args.cases for size in args.sizes
            for mode in args.modes for impl in (("ours", "mmseg") if r % 2 == 0 else ("mmseg", "ours"))]
    todo = [job for job in jobs if job not in done]
    if len(todo) < len(jobs):
        print(f"resuming {args.out}: {len(jobs) - len(todo)} of {len(jobs)} processes already measured", flush=True)
    for i, (r, case, size, mode, impl) in enumerate(todo, 1):
        res = run_worker(args.python, impl, case, size, mode, args.reps, args.threads, args.timeout, args.batch,
                         "tensors" if args.tensors else "time")
        records.append({"round": r, "case": case, "size": size, "mode": mode, "impl": impl, **res})
        print(f"[{i}/{len(todo)}] round {r + 1} {case} {size} {mode} {impl}: {res}", flush=True)
        if args.out:
            from segattn.io import atomic_write_json

            atomic_write_json(args.out, {"command": cmd, "settings": settings, "records": records})
    results: Dict[Tuple[str, str, str, str], Dict[str, Any]] = {}
    for rec in records:
        slot = results.setdefault((rec["case"], str(rec["size"]), rec["mode"], rec["impl"]),
                                  {"ms": [], "peak_mb": [], "live_mb": []})
        if "error" in rec:
            slot["error"] = rec["error"]
        for key in ("ms", "peak_mb", "live_mb"):
            if key in rec:
                slot[key].append(rec[key])
    print()
    print(f"`{cmd}`")
    print()
    print((tensor_table if args.tensors else table)(results, args.cases, args.sizes, args.modes))
    print()
    for case in args.cases:
        print(f"- {case}: {CASES[case].note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
