"""EM diagnostics: the objective, entropy and bases per iteration, and the model at other T."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
from torch import nn

from segattn.analyze import metrics as M
from segattn.analyze.measure.common import (
    Batches,
    Confusion,
    Pooled,
    _cue_cells,
    _nanmean,
    capture,
    context_slot,
    em_mappers,
    em_stages,
    labels_at,
    logits_of,
    module_name,
)
from segattn.lowrank.mappers import em_step


def em_curves(model: nn.Module, batches: Batches, synthetic: bool = False, max_t: int = 5) -> Dict[str, Any]:
    """Per EM iteration t = 1..max_t from the trained bases (eval mode, on the first EM module's input):

    ``em_objective``: ``mean_n log sum_k exp(lambda x_n^T mu_k)`` after the M-step of iteration t (the
    log-likelihood, up to a constant, of the kernel mixture EM ascends; x = the module's ``conv_in``
    features; nats per pixel); ``em_entropy``: :func:`metrics.entropy_ratio` of the responsibilities Z_t;
    ``em_bases_cosine``: mean pairwise cosine of mu_t; ``em_cue_mass`` (synthetic set): the cue mass of
    the rows of ``Z_t Zbar_t^T`` over shape pixels, as in :func:`measure_features`. Means over images.
    Also ``em_buffer_cosine`` (mean pairwise cosine of the trained bases buffer, the t = 0 bases) and
    ``em_feature_norm`` (mean l2 norm of a pixel's x: with unit bases, ``lambda ||x||`` bounds the
    E-step's logits, so it sets how sharp the responsibilities can be).
    """
    mods = [m for m in model.modules() if module_name(m) == "ema"]
    if not mods:
        return {}
    ema = mods[0]
    mapper = ema.block.mapper
    keys = ("em_objective", "em_entropy", "em_bases_cosine", "em_cue_mass")
    vals: Dict[str, List[List[float]]] = {k: [[] for _ in range(max_t)] for k in keys}
    norms: List[float] = []
    for images, masks in batches:
        with torch.no_grad(), capture(ema) as st:
            logits_of(model, images)
        with torch.no_grad():
            h = ema.conv_in(st["in"]).float()
            size = tuple(h.shape[-2:])
            x = h.reshape(h.shape[0], h.shape[1], -1)
            lab = labels_at(masks, size).reshape(h.shape[0], -1)
            cues = _cue_cells(images, size).reshape(h.shape[0], -1) if synthetic else None
            mu = mapper.bases.float()[None].expand(x.shape[0], -1, -1)
            norms += x.norm(dim=1).mean(1).tolist()
            for t in range(max_t):
                z, zbar, mu = em_step(x, mu, mapper.kernel_scale, mapper.l2norm, mapper.eps)
                obj = torch.logsumexp(mapper.kernel_scale * x.transpose(1, 2) @ mu, dim=2).mean(1)
                for i in range(x.shape[0]):
                    vals["em_objective"][t].append(float(obj[i]))
                    vals["em_entropy"][t].append(M.entropy_ratio(z[i], dim=-1))
                    vals["em_bases_cosine"][t].append(M.mean_pairwise_cosine(mu[i]))
                    if cues is not None and (lab[i] > 0).any():
                        # shape pixels' attention on the cue, Z_fg (Zbar^T cue): no (N_fg, N) map
                        mass = z[i][lab[i] > 0] @ (zbar[i].transpose(0, 1) @ cues[i].to(zbar.dtype))
                        vals["em_cue_mass"][t].append(float(mass.mean()))
    out: Dict[str, Any] = {k: [_nanmean(v) for v in per_t] for k, per_t in vals.items() if any(per_t)}
    out["em_buffer_cosine"] = M.mean_pairwise_cosine(mapper.bases)
    out["em_feature_norm"] = _nanmean(norms)
    return out


def measure_stage_swap(model: nn.Module, batches: Batches, num_classes: int, ignore_index: int,
                       stages: Sequence[int] = (1, 3, 5)) -> Dict[str, float]:
    """mIoU (percent) of the trained model evaluated with each number of EM iterations in ``stages``
    (the trained bases and weights unchanged): ``miou_T<t>``, and the pooled foreground separation
    of the module's output at that T (``pooled_separation_T<t>``, as in :func:`measure_features`).
    Empty for a model without EM."""
    if not em_mappers(model):
        return {}
    out = {}
    module = context_slot(model)
    for t in stages:
        conf = Confusion(num_classes, ignore_index)
        pooled = Pooled(ignore_index)
        with em_stages(model, t), torch.no_grad(), capture(module) as st:
            for images, masks in batches:
                conf.add(logits_of(model, images).argmax(1), masks)
                lab = labels_at(masks, tuple(st["out"].shape[-2:]))
                for i in range(lab.shape[0]):
                    pooled.add(st["out"][i].float(), lab[i])
        out[f"miou_T{t}"] = conf.miou()
        out[f"pooled_separation_T{t}"] = pooled.separation()
    return out
