"""The survey's explanations measured by metrics that test their statements (issue 30).

One step, :func:`measure_survey`, on the measured module (:func:`~segattn.analyze.measure.context_slot`):

* the *context path*: what the module aggregates before any residual or concatenation
  (:func:`context_path`): a low-rank block's reconstruction, Non-local's ``A v``, PPM's / APCNet's
  pooled-grid reconstruction; the FCN's identity slot has the input itself (the control);
* low rank: its effective rank and the Fisher ratio of the classes on it vs on the module input;
* denoising: noise passed vs centred signal passed, for the module, its context path, a 3 x 3 box
  filter and the identity, on the same input and the same noise;
* smoothing: within- / between-class variance in the input's normalisation and as shares of the map's
  own variance, within-class roughness (scale-free), boundary contrast; controls: a 3 x 3 box filter (blurs edges) and a
  7 x 7 label-aware box filter (the ideal edge-preserving smoother, in Local Relation's window);
* bases: centred / relative cosine, Gram effective rank / K, reconstruction error on small segments;
* information flow (synthetic set): swap the cue colours, measure the change of the shape cells'
  module output and the shape pixels' logits, per EM iteration count;
* query independence as an intervention: every attention row replaced by the image's mean row.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from segattn.analyze import metrics as M
from segattn.analyze import survey_metrics as S
from segattn.analyze.measure.common import (
    FEATURE_NOISE,
    NAN,
    Batches,
    Confusion,
    Pooled,
    _nanmean,
    capture,
    context_slot,
    em_mappers,
    em_stages,
    labels_at,
    logits_of,
)
from segattn.analyze.measure.features import lowrank_parts
from segattn.analyze.measure.segments import area_edges, segment_records_of, small_segment_pixels
from segattn.data.synthetic import CUE_COLORS
from segattn.lowrank import LowRankBlock
from segattn.modules.apcnet import APCNet
from segattn.modules.gcnet import GlobalContextBlock
from segattn.modules.pooling import PyramidPooling

BOX = 3  # the box-filter control's size (cells)
EBOX = 7  # the label-aware box filter's size (cells): Local Relation's window
EM_STAGES = (1, 3, 5)  # EM iteration counts of the counterfactual


# ------------------------------------------------------------------------------------- interventions
def _aggregators(module: nn.Module) -> List[nn.Module]:
    """The low-rank blocks and every submodule with an ``_aggregate`` method returning ``(context,
    weights)`` (Non-local, DNL, DANet's position attention, the OCNet / ANN self-attention unit, ISA's
    stages, OCR, CCNet's passes, PSANet's branches)."""
    return [m for m in module.modules() if isinstance(m, LowRankBlock) or hasattr(type(m), "_aggregate")]


def _query_dims(aggregator: nn.Module) -> Tuple[int, ...]:
    """The dims of an ``_aggregate`` output that index its query pixels: the class's
    ``aggregate_query_dims`` (CCNet: a (B, C, H, W) map; PSANet: (B, C, N')), else the token layout
    (B, groups, N, C) of the softmax aggregators (ISA: one group per sparse / local set of pixels)."""
    return tuple(getattr(type(aggregator), "aggregate_query_dims", (-2,)))


def _as_path(y: Tensor, dims: Tuple[int, ...]) -> Tensor:
    """(B, C', N) of an ``_aggregate`` output: tokens (B, groups, N, C') give their first group."""
    return y[:, 0].transpose(1, 2).clone() if dims == (-2,) else y.flatten(2).clone()


@contextlib.contextmanager
def tap_context(module: nn.Module, mean_row: bool = False) -> Iterator[Dict[str, Tensor]]:
    """Inside the block, the aggregated context of ``module``'s first Non-local / low-rank aggregator is
    stored as ``store["path"]`` (B, C', N) at every forward. With ``mean_row``, every aggregator's
    output is replaced by its mean over the query pixels: for ``y_i = sum_j A_ij v_j`` that is exactly
    ``y_i = (mean_i A_i) v`` (attention rows replaced by the image's mean row), the query-independence
    intervention. Modules without such an aggregator: nothing stored, nothing changed."""
    store: Dict[str, Tensor] = {}
    aggs = _aggregators(module)
    handles, patched = [], []

    def block_hook(mod: nn.Module, args: Tuple[Any, ...], out: Any) -> Any:
        y = out[0] if isinstance(out, tuple) else out
        if mean_row:
            y = y.mean(dim=tuple(range(2, y.dim())), keepdim=True).expand_as(y).clone()
        if mod is aggs[0]:
            store["path"] = y.reshape(y.shape[0], y.shape[1], -1).clone()  # EMA applies ReLU in place after
        return (y,) + tuple(out[1:]) if isinstance(out, tuple) else y

    for m in aggs:
        if isinstance(m, LowRankBlock):
            handles.append(m.register_forward_hook(block_hook))
            continue
        orig = m._aggregate

        def wrapped(*args: Any, _orig: Any = orig, _m: nn.Module = m, **kwargs: Any) -> Any:
            y, w = _orig(*args, **kwargs)
            dims = _query_dims(_m)
            if mean_row:
                y = y.mean(dim=dims, keepdim=True).expand_as(y).clone()
            if _m is aggs[0]:
                store["path"] = _as_path(y, dims)
            return y, w

        m._aggregate = wrapped  # type: ignore[method-assign]
        patched.append(m)
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
        for m in patched:
            del m._aggregate


def context_path(module: nn.Module, x: Tensor) -> Optional[Tensor]:
    """(C', N) context path of one image (1, C, h, w) before any residual / concatenation: the first
    low-rank block's reconstruction or the first ``_aggregate``'s output (Non-local's ``A v``, DNL,
    DANet's PAM, the OCNet / ANN unit); GCNet: its added vector at every pixel (rank 1: the
    query-independent context); PPM and APCNet: their pooled-grid reconstruction
    (:func:`~segattn.analyze.measure.features.lowrank_parts`); ``nn.Identity``: ``x`` itself. None for
    a module without any of these, or whose aggregation runs at another resolution (pooled queries)."""
    if isinstance(module, nn.Identity):
        return x[0].reshape(x.shape[1], -1).float()
    if isinstance(module, (PyramidPooling, APCNet)):
        parts = lowrank_parts(module, x)
        return None if parts is None else parts[2]
    if isinstance(module, GlobalContextBlock) and module.channel_add is not None:
        seen: Dict[str, Tensor] = {}
        h = module.channel_add.register_forward_hook(lambda m, a, out: seen.__setitem__("v", out))
        try:
            with torch.no_grad():
                module(x)
        finally:
            h.remove()
        v = seen["v"][0].reshape(-1, 1).float()  # one vector per image, added at every pixel
        return v.expand(-1, x.shape[-2] * x.shape[-1]).clone()
    if not _aggregators(module):
        return None
    with torch.no_grad(), tap_context(module) as st:
        module(x)
    path = st.get("path")
    if path is None or path.shape[-1] != x.shape[-2] * x.shape[-1]:  # pooled queries or one region only
        return None
    return path[0].float()


def swap_cues(images: Tensor) -> Tensor:
    """Synthetic set: every colour pixel (RGB channels differ; all else there is grey) repainted with its
    partner colour (red <-> green, blue <-> yellow, magenta <-> cyan, orange <-> brown: the nearest of
    :data:`segattn.data.synthetic.CUE_COLORS` ``k`` becomes ``k xor 1``). [0, 1] images (B, 3, H, W)."""
    palette = torch.tensor(CUE_COLORS, dtype=images.dtype, device=images.device) / 255.0  # (K, 3)
    rgb = images[:, :3]
    colour = ((rgb[:, 0] - rgb[:, 1]).abs() + (rgb[:, 1] - rgb[:, 2]).abs()) > 1e-3
    px = rgb.permute(0, 2, 3, 1)[colour]  # (P, 3)
    nearest = torch.cdist(px, palette).argmin(1)
    out = images.clone()
    perm = out[:, :3].permute(0, 2, 3, 1)
    perm[colour] = palette[nearest ^ 1]
    out[:, :3] = perm.permute(0, 3, 1, 2)
    return out


# --------------------------------------------------------------------------------------- per image
def small_cells(masks: Tensor, max_area: float, size: Tuple[int, int], ignore_index: int) -> Tensor:
    """(B, h, w) bool: the feature cells whose pixel centre (:func:`labels_at`) lies on a small segment,
    the segments of ``acc_small``'s bin (:func:`~segattn.analyze.measure.segments.small_segment_pixels`),
    their areas counted at pixel resolution."""
    px = torch.stack([small_segment_pixels(m, max_area, ignore_index) for m in masks])
    return labels_at(px.long().to(masks.device), size) > 0


def _image(module: nn.Module, r: Tensor, c: Tensor, lab: Tensor, small: Tensor, ignore_index: int,
           gen: torch.Generator) -> Tuple[Dict[str, float], Optional[Tensor]]:
    """Per-image metrics and the context path (C', N) of one image's module input r and output c; ``lab``
    the labels of r's cells, ``small`` the cells of small segments (:func:`small_cells`)."""
    out: Dict[str, float] = {}
    x = r[None]
    path = context_path(module, x)
    if path is not None:
        out["erank_path"] = M.effective_rank(path)
    # denoising: one noise, five maps
    n = torch.randn(x.shape, generator=gen).to(x) * (FEATURE_NOISE * float(r.pow(2).mean().sqrt()))
    with torch.no_grad():
        y1 = module(x + n)
    y1 = y1[0] if isinstance(y1, tuple) else y1
    maps = {"out": (c[None], y1), "identity": (x, x + n), f"box{BOX}": (S.box_filter(x, BOX), S.box_filter(x + n, BOX))}
    if path is not None:
        p1 = context_path(module, x + n)
        if p1 is not None:
            hw = x.shape[-2:]
            maps["path"] = (path.reshape(1, -1, *hw), p1.reshape(1, -1, *hw))
    for k, (clean, noisy) in maps.items():
        out[f"noise_gain_{k}"] = S.noise_gain(clean, noisy, n)
        out[f"signal_gain_{k}"] = S.signal_gain(x, clean)
        out[f"denoise_index_{k}"] = S.denoising_index(x, clean, noisy, n)
    # smoothing: the input's total variance is the common unit
    vin = S.variance_split(r, lab, ignore_index)
    t = vin["total"]
    smoothers = (("in", r), ("out", c), (f"box{BOX}", S.box_filter(x, BOX)[0]),
                 (f"ebox{EBOX}", S.label_box_filter(r, lab, EBOX, ignore_index)))
    for k, f in smoothers:
        v = S.variance_split(f, lab, ignore_index) if k != "in" else vin
        if f.shape[0] == r.shape[0] and t and not math.isnan(t):
            out[f"within_{k}"], out[f"between_{k}"] = v["within"] / t, v["between"] / t
        out[f"within_frac_{k}"] = v["within"] / v["total"] if v["total"] else NAN
        out[f"boundary_contrast_{k}"] = S.boundary_contrast(f, lab, ignore_index)
        out[f"roughness_{k}"] = S.roughness(f, lab, ignore_index)
    # bases
    parts = lowrank_parts(module, x) if not isinstance(module, nn.Identity) else None
    if parts is not None:
        feats, bases, rec = parts
        out["bases_centred_cosine"] = S.centred_cosine(bases, feats)
        out["bases_relative_cosine"] = S.relative_cosine(bases, feats, generator=gen)
        out["bases_gram_erank_fraction"] = S.gram_erank_fraction(bases)
        if small.any():
            out["bases_recon_error_small"] = S.masked_reconstruction_error(feats, rec, small)
            out["bases_recon_error_rest"] = S.masked_reconstruction_error(feats, rec, ~small)
    return out, path


def _flow(model: nn.Module, module: nn.Module, batches: Batches) -> Dict[str, float]:
    """Counterfactual information flow: cue colours swapped (:func:`swap_cues`); ``cf_module`` = relative
    change of the module output on the shape cells, ``cf_logits`` = on the shape pixels' logits
    (:func:`segattn.analyze.survey_metrics.counterfactual_change`); per EM iteration count for EM models."""
    stages: Tuple[Optional[int], ...] = (None,) + (EM_STAGES if em_mappers(model) else ())
    out: Dict[str, float] = {}
    for t in stages:
        mods, logs = [], []
        with em_stages(model, t), torch.no_grad():
            for images, masks in batches:
                with capture(module) as a:
                    la = logits_of(model, images)
                with capture(module) as b:
                    lb = logits_of(model, swap_cues(images))
                lab = labels_at(masks, tuple(a["out"].shape[-2:]))
                for i in range(images.shape[0]):
                    if (lab[i] > 0).any():
                        mods.append(S.counterfactual_change(a["out"][i], b["out"][i], lab[i] > 0))
                    if (masks[i] > 0).any():
                        logs.append(S.counterfactual_change(la[i], lb[i], masks[i] > 0))
        tag = "" if t is None else f"_T{t}"
        out[f"cf_module{tag}"], out[f"cf_logits{tag}"] = _nanmean(mods), _nanmean(logs)
    return out


def measure_survey(model: nn.Module, batches: Batches, num_classes: int, ignore_index: int,
                   synthetic: bool = False, seed: int = 0) -> Dict[str, float]:
    """Every metric of this file, averaged over validation images (definitions: docs/analyze.md, section
    "Metrics that test the statements"); pooled over images: ``fisher_in`` / ``fisher_path`` /
    ``fisher_out`` (:func:`~segattn.analyze.survey_metrics.fisher_ratio` of the foreground classes, 64
    pixels per image as in ``pooled_separation``) and ``fisher_gain_path`` = fisher_path / fisher_in;
    ``miou_meanrow`` and ``meanrow_drop`` (mIoU with every attention row replaced by the image's mean
    row, modules with a Non-local or low-rank aggregator); ``cf_*`` on the synthetic set."""
    module = context_slot(model)
    if module is None:
        return {}
    gen = torch.Generator().manual_seed(seed)
    vals: Dict[str, List[float]] = {}
    pooled = {k: Pooled(ignore_index, seed) for k in ("in", "path", "out")}
    clean, meanrow = Confusion(num_classes, ignore_index), Confusion(num_classes, ignore_index)
    has_rows = bool(_aggregators(module))
    small_max = area_edges(segment_records_of(None, batches, ignore_index))[1]
    for images, masks in batches:
        with torch.no_grad(), capture(module) as st:
            clean.add(logits_of(model, images).argmax(1), masks)
        if has_rows:
            with torch.no_grad(), tap_context(module, mean_row=True):
                meanrow.add(logits_of(model, images).argmax(1), masks)
        r, c = st["in"].float(), st["out"].float()
        lab = labels_at(masks, tuple(r.shape[-2:]))
        small = small_cells(masks, small_max, tuple(r.shape[-2:]), ignore_index)
        for i in range(r.shape[0]):
            got, path = _image(module, r[i], c[i], lab[i], small[i], ignore_index, gen)
            for k, v in got.items():
                vals.setdefault(k, []).append(v)
            pooled["in"].add(r[i], lab[i])
            pooled["out"].add(c[i], lab[i])
            if path is not None:
                pooled["path"].add(path.reshape(-1, *r.shape[-2:]), lab[i])
    out = {k: _nanmean(v) for k, v in vals.items()}
    for k, p in pooled.items():
        out[f"fisher_{k}"] = (S.fisher_ratio(torch.cat(p.feats, 1), torch.cat(p.labels), ignore_index)
                              if p.feats else NAN)
    fin = out["fisher_in"]
    out["fisher_gain_path"] = out["fisher_path"] / fin if fin and not math.isnan(fin) else NAN
    if has_rows:
        out["miou_meanrow"] = meanrow.miou()
        out["meanrow_drop"] = clean.miou() - out["miou_meanrow"]
    if synthetic:
        out.update(_flow(model, module, batches))
    return out


__all__ = ["measure_survey", "context_path", "tap_context", "swap_cues", "small_cells", "BOX", "EBOX"]
