"""Explanations 1 (module side), 2, 3, 4 (bases) and 5 (query independence) on the module's features."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.analyze import metrics as M
from segattn.analyze.measure.common import (
    FEATURE_NOISE,
    MAX_QUERIES,
    NAN,
    Batches,
    Pooled,
    _cue_cells,
    _nanmean,
    capture,
    context_slot,
    labels_at,
    logits_of,
    module_name,
    run_with_attention,
)
from segattn.lowrank import LowRankBlock
from segattn.modules.apcnet import APCNet
from segattn.modules.pooling import PyramidPooling, pyramid_pool


def attention_rows(module: nn.Module, x: Tensor) -> Optional[Tensor]:
    """(N, M) pixel-weight rows of a one-image input (1, C, h, w): Non-local's attention, a low-rank
    module's ``M_rev M_map``; None for modules without such rows, and None when the rows are not
    weight distributions (a negative weight or a row sum off 1 by more than 1e-3: GloRe's and SGR's
    learned linear projections), for which TV distances and cue mass mean nothing."""
    name = module_name(module)
    if name.startswith("nonlocal"):
        rows = run_with_attention(module, x)["attention"][0].float()
    elif name in ("ema", "a2", "glore", "graphrep", "sgr"):
        f = run_with_attention(module, x)
        rows = (f["reverse"][0] @ f["map"][0]).float()
    else:
        return None
    convex = bool(rows.min() >= -1e-6) and bool(torch.allclose(rows.sum(1), torch.ones(()), atol=1e-3))
    return rows if convex else None


def pyramid_parts(module: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """PSPNet's pyramid pooling read as a crude map / reverse-map (survey, and spec 1.2), one image:
    F = the module input X (C, N); bases = the adaptive-average-pooled bin vectors of X at every bin
    b (C, K = sum b^2); reconstruction = (1 / |bins|) sum_b U_b P_b X, the bilinear upsampling of each
    level averaged over levels, so each pixel is a convex combination of the bases, as in A2 / EMA.
    The branch convs act on the pooled vectors after this and are not part of the bases."""
    bins, size = module.bins, x.shape[-2:]  # type: ignore[attr-defined]
    ups = [F.interpolate(F.adaptive_avg_pool2d(x, b), size, mode="bilinear",
                         align_corners=module.align_corners) for b in bins]  # type: ignore[attr-defined]
    rec = torch.stack(ups).mean(0)[0]
    return x[0].reshape(x.shape[1], -1).float(), pyramid_pool(x, bins)[0].float(), rec.reshape(x.shape[1], -1).float()


def apcnet_parts(module: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """APCNet read the same way as :func:`pyramid_parts`, one image: F = the module input X (C, N);
    bases = the adaptive-average-pooled cells of X at every scale s (C, K = sum s^2); reconstruction
    = (1 / |scales|) sum_s P_s(X) alpha_s^T with alpha_s (N, s^2) the module's own sigmoid affinity
    (its reverse map, not normalised). Each ACM's conv on the pooled cells is not part of the bases."""
    scales = module.pool_scales  # type: ignore[attr-defined]
    factors = run_with_attention(module, x)
    rec = torch.stack([F.adaptive_avg_pool2d(x, s)[0].flatten(1).float() @ factors[f"affinity_{s}"][0].float().T
                       for s in scales]).mean(0)
    return x[0].reshape(x.shape[1], -1).float(), pyramid_pool(x, scales)[0].float(), rec


def lowrank_parts(module: nn.Module, x: Tensor) -> Optional[Tuple[Tensor, Tensor, Tensor]]:
    """(features F (C', N), bases (C', K), reconstruction (C', N)) of a low-rank block on one image:
    F is what the block aggregates (its ``value``, else its input), the bases its ``nodes``, the
    reconstruction ``nodes @ reverse^T``. PPM and APCNet (several pooled grids): :func:`pyramid_parts`,
    :func:`apcnet_parts`. None for modules without a ``LowRankBlock``."""
    if isinstance(module, (PyramidPooling, APCNet)):
        with torch.no_grad():
            return (pyramid_parts if isinstance(module, PyramidPooling) else apcnet_parts)(module, x)
    block = next((m for m in module.modules() if isinstance(m, LowRankBlock)), None)
    if block is None:
        return None
    seen: Dict[str, Tensor] = {}

    def pre(mod: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        seen["f"] = kwargs.get("value") if kwargs.get("value") is not None else (
            args[1] if len(args) > 1 and args[1] is not None else args[0])

    h = block.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        fac = run_with_attention(module, x)
    finally:
        h.remove()
    if "f" not in seen or "nodes" not in fac or "reverse" not in fac:
        return None
    feats = seen["f"][0].reshape(seen["f"].shape[1], -1).float()
    nodes, rev = fac["nodes"][0].float(), fac["reverse"][0].float()
    if nodes.shape[0] != feats.shape[0] or rev.shape[0] != feats.shape[1]:
        return None
    return feats, nodes, nodes @ rev.transpose(0, 1)


def _image_feature_metrics(module: nn.Module, r: Tensor, c: Tensor, lab: Tensor, cue: Optional[Tensor],
                           ignore_index: int, gen: torch.Generator) -> Dict[str, float]:
    """Per-image metrics of explanations 1 (module side), 2, 3, 4 (bases) and 5 (query independence)."""
    out: Dict[str, float] = {}
    j_in, j_out = M.class_separation(r, lab, ignore_index), M.class_separation(c, lab, ignore_index)
    out["separation_in"], out["separation_out"] = j_in, j_out
    out["separation_ratio"] = j_out / j_in if j_in and not math.isnan(j_in) else NAN
    e_in, e_out = M.effective_rank(r), M.effective_rank(c)
    out["erank_in"], out["erank_out"] = e_in, e_out
    out["erank_ratio"] = e_out / e_in if e_in and not math.isnan(e_in) else NAN
    x = r[None]
    rms = float(r.pow(2).mean().sqrt())
    noise = torch.randn(x.shape, generator=gen).to(x) * (FEATURE_NOISE * rms)
    with torch.no_grad():
        y0 = c[None] if not isinstance(module, nn.Identity) else x
        y1 = module(x + noise)
        y1 = y1[0] if isinstance(y1, tuple) else y1
    out["nsr_gain"] = M.noise_to_signal_gain(x, x + noise, y0, y1)
    parts = lowrank_parts(module, x) if not isinstance(module, nn.Identity) else None
    if parts is not None:
        feats, bases, rec = parts
        out["bases_cosine"] = M.mean_pairwise_cosine(bases)
        out["bases_recon_error"] = M.reconstruction_error(feats, rec)
        out["erank_rec"] = M.effective_rank(rec)
        out["num_bases"] = float(bases.shape[1])
    rows = attention_rows(module, x) if not isinstance(module, nn.Identity) else None
    if rows is not None:
        out.update(_row_metrics(rows, lab, cue, gen))
    return out


def _row_metrics(rows: Tensor, lab: Tensor, cue: Optional[Tensor], gen: torch.Generator) -> Dict[str, float]:
    """Query independence (mean TV distance of query pairs: all, different-class) and cue mass."""
    n = rows.shape[0]
    flat = lab.reshape(-1)
    q = torch.randperm(n, generator=gen)[:MAX_QUERIES] if n > MAX_QUERIES else torch.arange(n)
    sub, ql = rows[q].double(), flat[q]
    d = 0.5 * torch.cdist(sub, sub, p=1.0)
    off = ~torch.eye(len(q), dtype=torch.bool)
    diff = off & (ql[:, None] != ql[None, :])
    out = {"tv_all": float(d[off].mean()) if off.any() else NAN,
           "tv_diff_class": float(d[diff].mean()) if diff.any() else NAN}
    if cue is not None and rows.shape[1] == cue.numel():
        shape = flat > 0
        if shape.any():
            mass = rows[shape] @ cue.reshape(-1).to(rows)
            out["cue_mass"] = float(mass.mean())
            out["cue_area"] = float(cue.mean())
    return out


def measure_features(model: nn.Module, batches: Batches, ignore_index: int, synthetic: bool = False,
                     seed: int = 0) -> Dict[str, float]:
    """Explanations 1 (module), 2, 3, 4 (bases) and 5 (query independence), averaged over images.

    Per validation image, at the module's feature resolution (labels sampled at cell centres):
    ``separation_in/out`` and ``separation_ratio`` = J(out) / J(in) (:func:`metrics.class_separation`;
    below 1 = edge-preserving smoothing); ``erank_in/out``, ``erank_ratio`` and, for low-rank
    modules, ``erank_rec`` of the reconstruction ``nodes @ reverse^T`` (:func:`metrics.effective_rank`);
    ``nsr_gain`` of the module for white Gaussian noise of std 0.1 x the input's RMS added to its
    input (:func:`metrics.noise_to_signal_gain`); ``bases_cosine``, ``bases_recon_error`` (low-rank
    modules, and the pooled grids of PPM and APCNet: :func:`pyramid_parts`, :func:`apcnet_parts`);
    ``tv_all`` / ``tv_diff_class`` (mean TV distance between the attention rows of two
    query pixels, all pairs / pairs of different labels, up to 256 queries per image) and, on the
    synthetic set, ``cue_mass`` (mean over shape-pixel queries of the attention weight on the cue,
    each cell weighted by the fraction of it the cue covers) and ``cue_area`` (that fraction's mean:
    the cue mass of a uniform map). Every value is the mean over images where it is defined, except
    ``pooled_separation_in/out``: J of the module's input / output over the foreground pixels (label
    not 0) of all images pooled (64 random pixels per image), so the classes are told apart across
    images; on the synthetic set these are the shape pixels, whose class is the far cue's colour, and
    a low J out means the module has brought the cue's information to them.
    """
    module = context_slot(model)
    if module is None:
        return {}
    gen = torch.Generator().manual_seed(seed)
    sums: Dict[str, List[float]] = {}
    pooled_in, pooled_out = Pooled(ignore_index, seed), Pooled(ignore_index, seed)
    for images, masks in batches:
        with torch.no_grad(), capture(module) as st:
            logits_of(model, images)
        r, c = st["in"].float(), st["out"].float()
        lab = labels_at(masks, tuple(r.shape[-2:]))
        cues = _cue_cells(images, tuple(r.shape[-2:])) if synthetic else None
        for i in range(r.shape[0]):
            pooled_in.add(r[i], lab[i])
            pooled_out.add(c[i], lab[i])
            vals = _image_feature_metrics(module, r[i], c[i], lab[i], None if cues is None else cues[i],
                                          ignore_index, gen)
            for k, v in vals.items():
                sums.setdefault(k, []).append(v)
    out = {k: _nanmean(v) for k, v in sums.items()}
    out["pooled_separation_in"], out["pooled_separation_out"] = pooled_in.separation(), pooled_out.separation()
    return out
