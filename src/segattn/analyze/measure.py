"""The five measurements of ``segattn analyze`` on a trained model and its validation set.

Each ``measure_*`` function takes an eval-mode model, a list of validation batches ``(images,
masks)`` and the dataset's ``num_classes`` / ``ignore_index``, and returns a flat dict of floats
(plus, for the EM diagnostics, per-iteration lists). Metric definitions: :mod:`segattn.analyze.metrics`.
The *module* of a model is its head's context slot (``model.head.context``; ``nn.Identity`` for the
FCN baseline, which thereby measures as the identity), else its outermost registered context module.
Its input is the reduced backbone feature ``r`` the module reads, its output what the head gets.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.analyze import metrics as M

NAN = float("nan")
Batches = Sequence[Tuple[Tensor, Tensor]]
Log = Callable[[str], None]
NOISE_SIGMAS = (0.05, 0.1)  # input-noise std, as a fraction of the pixel range ([0, 1] images)
FGSM_EPS = (1 / 255, 2 / 255)  # FGSM step, same units
FEATURE_NOISE = 0.1  # module-input noise std as a fraction of the input's RMS
MAX_QUERIES = 256  # query pixels per image for the attention-map distances


# -------------------------------------------------------------------------------------- model parts
def context_slot(model: nn.Module) -> Optional[nn.Module]:
    """The module whose input/output are measured: ``model.head.context`` or the outermost context module."""
    head = getattr(model, "head", None)
    if head is not None and isinstance(getattr(head, "context", None), nn.Module):
        return head.context
    from segattn.modules.base import ContextModule

    return next((m for m in model.modules() if isinstance(m, ContextModule)), None)


def module_name(module: Optional[nn.Module]) -> str:
    """Registered name of a context module ('identity' for ``nn.Identity``, '' for none)."""
    if module is None:
        return ""
    if isinstance(module, nn.Identity):
        return "identity"
    from segattn.registry import MODULES

    return next((n for n in MODULES.list() if type(module) is MODULES.get(n)), type(module).__name__)


def run_with_attention(module: nn.Module, x: Tensor) -> Dict[str, Tensor]:
    """Eval-mode, no-grad ``module(x, return_attention=True)`` factors (training flag restored)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(x, return_attention=True)
    finally:
        module.train(was_training)
    return out[1]


def em_mappers(model: nn.Module) -> List[nn.Module]:
    from segattn.lowrank.mappers import EMMapper

    return [m for m in model.modules() if isinstance(m, EMMapper)]


@contextlib.contextmanager
def em_stages(model: nn.Module, stages: Optional[int]) -> Iterator[None]:
    """Temporarily run every EM mapper with ``stages`` iterations (None: unchanged)."""
    mappers = em_mappers(model)
    old = [m.num_stages for m in mappers]
    try:
        if stages is not None:
            for m in mappers:
                m.num_stages = int(stages)
        yield
    finally:
        for m, t in zip(mappers, old):
            m.num_stages = t


@contextlib.contextmanager
def em_gradient_cut(model: nn.Module) -> Iterator[None]:
    """EM iterations without autograd, as in training (``backprop_through_em=False``), while the rest of
    the model stays in eval mode and the bases are not updated (the mappers' momentum is switched off)."""
    mappers = [m for m in em_mappers(model) if not m.backprop]
    saved = [(m.training, m.momentum) for m in mappers]
    try:
        for m in mappers:
            m.training, m.momentum = True, None
        yield
    finally:
        for m, (tr, mom) in zip(mappers, saved):
            m.training, m.momentum = tr, mom


@contextlib.contextmanager
def _hooks(module: nn.Module, pre: Callable[..., Any], post: Callable[..., Any]) -> Iterator[None]:
    """``pre`` as a forward pre-hook and ``post`` as a forward hook of ``module`` inside the block."""
    handles = [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def capture(module: nn.Module) -> Iterator[Dict[str, Tensor]]:
    """Record ``module``'s first input (``"in"``) and output (``"out"``) of the forwards inside the block."""
    store: Dict[str, Tensor] = {}

    def pre(mod: nn.Module, args: Tuple[Any, ...]) -> None:
        store["in"] = args[0]

    def post(mod: nn.Module, args: Tuple[Any, ...], out: Any) -> None:
        store["out"] = out[0] if isinstance(out, tuple) else out

    with _hooks(module, pre, post):
        yield store


@contextlib.contextmanager
def at_eval_scale(model: nn.Module, scale: float) -> Iterator[nn.Module]:
    """Inside the block ``model(x)`` runs as the engine's single-scale whole-image evaluation does:
    x resized by ``scale`` (:func:`segattn.engine.evaluate.resize_by`), the logits (``"out"``) resized
    back to x's size (bilinear). Every measurement then sees the model at the input size it was
    evaluated at (CamVid's protocol: a third), while perturbations, gradients and accuracies stay in
    the validation images' own pixels. Scale 1 changes nothing."""
    from segattn.engine.evaluate import resize_by

    if scale == 1.0:
        yield model
        return
    sizes: List[Tuple[int, int]] = []

    def pre(mod: nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
        sizes.append(tuple(args[0].shape[-2:]))
        return (resize_by(args[0], scale),) + tuple(args[1:])

    def post(mod: nn.Module, args: Tuple[Any, ...], out: Any) -> Any:
        size = sizes.pop()

        def back(t: Tensor) -> Tensor:
            return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

        return {**out, "out": back(out["out"])} if isinstance(out, dict) else back(out)

    with _hooks(model, pre, post):
        yield model


def logits_of(model: nn.Module, images: Tensor) -> Tensor:
    out = model(images)
    return out["out"] if isinstance(out, dict) else out


def labels_at(masks: Tensor, size: Tuple[int, int]) -> Tensor:
    """Masks (B, H, W) sampled at the pixel centres of a (h, w) grid (nearest), int64."""
    return F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0].long()


# ----------------------------------------------------------------------------------------- accuracy
class Confusion:
    """Dataset-level mIoU (percent) from accumulated per-class counts (the engine's definition)."""

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        self.k, self.ignore = num_classes, ignore_index
        self.tp = torch.zeros(num_classes, dtype=torch.float64)
        self.gt = torch.zeros(num_classes, dtype=torch.float64)
        self.pr = torch.zeros(num_classes, dtype=torch.float64)

    def add(self, pred: Tensor, target: Tensor) -> None:
        keep = (target != self.ignore) & (target >= 0) & (target < self.k)
        p, t = pred[keep].cpu().long().clamp(0, self.k - 1), target[keep].cpu().long()
        self.tp += torch.bincount(t[p == t], minlength=self.k).double()
        self.gt += torch.bincount(t, minlength=self.k).double()
        self.pr += torch.bincount(p, minlength=self.k).double()

    def miou(self) -> float:
        union = self.gt + self.pr - self.tp
        iou = self.tp[union > 0] / union[union > 0]
        return 100.0 * float(iou.mean()) if iou.numel() else NAN


def fgsm(model: nn.Module, images: Tensor, masks: Tensor, eps: Union[float, Tensor], ignore_index: int) -> Tensor:
    """One FGSM step: ``x + eps * sign(grad_x CE(model(x), y))`` (mean CE over labelled pixels; no clamp;
    ``eps`` a number or a per-channel (1, C, 1, 1) tensor)."""
    x = images.clone().requires_grad_(True)
    loss = F.cross_entropy(logits_of(model, x).float(), masks, ignore_index=ignore_index)
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None:  # the output does not depend on the input: nothing to attack
        return images.clone()
    return (images + eps * grad.sign()).detach()


def measure_robustness(model: nn.Module, batches: Batches, num_classes: int, ignore_index: int,
                       sigmas: Sequence[float] = NOISE_SIGMAS, eps: Sequence[float] = FGSM_EPS,
                       seed: int = 0, pixel_unit: Optional[Tensor] = None) -> Dict[str, float]:
    """Explanation 1 (denoising), the model side: mIoU under input perturbations and its drop.

    ``miou_clean``: dataset-level mIoU (percent) of plain eval forwards. ``miou_noise_<s>``: with
    white Gaussian noise of std ``s`` (units of the input tensor; the synthetic set's inputs are
    [0, 1] intensities) added to every input value, the same noise for every model (generator seeded
    with ``seed``). ``miou_fgsm_<e>``: after one FGSM step of size ``e`` against the model's own
    cross-entropy (white box). ``drop_*`` = clean minus perturbed, in mIoU points (positive = the
    perturbation hurts). An input-independent model has every drop 0.

    ``s`` and ``e`` are fractions of the pixel range: ``pixel_unit`` (C,) is the change of each input
    channel for a change of the whole pixel range (``255 / std`` for inputs standardised on the
    0-255 scale, :func:`segattn.analyze.run.pixel_unit`; 1, the default, for [0, 1] inputs).
    """
    gen = torch.Generator().manual_seed(seed)
    unit = 1.0 if pixel_unit is None else pixel_unit.reshape(1, -1, 1, 1)
    conf = {"clean": Confusion(num_classes, ignore_index)}
    conf.update({f"noise_{s:g}": Confusion(num_classes, ignore_index) for s in sigmas})
    conf.update({f"fgsm_{e:.4g}": Confusion(num_classes, ignore_index) for e in eps})
    for images, masks in batches:
        with torch.no_grad():
            conf["clean"].add(logits_of(model, images).argmax(1), masks)
            for s in sigmas:
                noise = torch.randn(images.shape, generator=gen).to(images) * (s * unit)
                conf[f"noise_{s:g}"].add(logits_of(model, images + noise).argmax(1), masks)
        for e in eps:
            adv = fgsm(model, images, masks, e * unit, ignore_index)
            with torch.no_grad():
                conf[f"fgsm_{e:.4g}"].add(logits_of(model, adv).argmax(1), masks)
    out = {f"miou_{k}": c.miou() for k, c in conf.items()}
    for k in conf:
        if k != "clean":
            out[f"drop_{k}"] = out["miou_clean"] - out[f"miou_{k}"]
    return out


# ----------------------------------------------------------------------------------------- features
def _cue_cells(images: Tensor, size: Tuple[int, int]) -> Tensor:
    """Synthetic set: fraction of each feature cell covered by the colour cue (pixels whose RGB
    channels differ; everything else in that set is grey), (B, h, w)."""
    rgb = images[:, :3]
    colour = ((rgb[:, 0] - rgb[:, 1]).abs() + (rgb[:, 1] - rgb[:, 2]).abs()) > 1e-3
    return F.adaptive_avg_pool2d(colour[:, None].float(), size)[:, 0]


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
    from segattn.modules.pooling import pyramid_pool

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
    from segattn.modules.pooling import pyramid_pool

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
    from segattn.lowrank import LowRankBlock
    from segattn.modules.apcnet import APCNet
    from segattn.modules.pooling import PyramidPooling

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


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else NAN


POOLED_PER_IMAGE = 64  # foreground pixels per image kept for the pooled separation


class Pooled:
    """Features of up to 64 random foreground pixels (label not 0 / ignore) per image, pooled over images."""

    def __init__(self, ignore_index: int, seed: int = 0) -> None:
        self.ignore, self.gen = ignore_index, torch.Generator().manual_seed(seed)
        self.feats: List[Tensor] = []
        self.labels: List[Tensor] = []

    def add(self, feats: Tensor, lab: Tensor) -> None:
        """``feats`` (C, h, w) and ``lab`` (h, w) of one image."""
        flat, f = lab.reshape(-1), feats.reshape(feats.shape[0], -1)
        idx = torch.nonzero((flat != 0) & (flat != self.ignore))[:, 0]
        idx = idx[torch.randperm(len(idx), generator=self.gen)[:POOLED_PER_IMAGE]]
        self.feats.append(f[:, idx].detach().double().cpu())
        self.labels.append(flat[idx].cpu())

    def separation(self) -> float:
        """:func:`metrics.class_separation` of the pooled pixels (NaN with fewer than two classes)."""
        if not self.feats:
            return NAN
        return M.class_separation(torch.cat(self.feats, 1), torch.cat(self.labels), self.ignore)


# -------------------------------------------------------------------------------------- segments
MIN_SEGMENT_FRACTION = 1e-4  # segments under 0.01 % of the image are annotation fragments, not objects


def segment_records_of(model: nn.Module, batches: Batches, ignore_index: int,
                       min_fraction: float = MIN_SEGMENT_FRACTION) -> List[Dict[str, float]]:
    """Every non-background ground-truth segment of the validation set with its area and correct pixels,
    leaving out those smaller than ``min_fraction`` of their image (at least ``ceil(min_fraction * H * W)``
    pixels are kept). On CamVid's val set (360x480: 18 px) 5298 of the 9062 segments are such specks
    (tree foliage holes, label edges; 0.1 % of the segment pixels); the synthetic set's smallest shape
    has 110 px, so nothing is left out there."""
    recs: List[Dict[str, float]] = []
    for images, masks in batches:
        with torch.no_grad():
            pred = logits_of(model, images).argmax(1)
        min_area = max(1, math.ceil(min_fraction * masks.shape[-2] * masks.shape[-1]))
        for p, t in zip(pred, masks):
            recs += [r for r in M.segment_records(p.cpu(), t.cpu(), ignore_index,
                                                  classes=[c for c in torch.unique(t).tolist() if c != 0])
                     if r["area"] >= min_area]
    return recs


def area_edges(records: Sequence[Dict[str, float]]) -> List[float]:
    """Tertile edges of the segments' areas (ground truth only, so the same for every model of a protocol)."""
    areas = sorted(r["area"] for r in records)
    if not areas:
        return [0.0, math.inf]
    q = [areas[int(len(areas) * f)] for f in (1 / 3, 2 / 3)]
    return [0.0, float(q[0]), float(q[1]), math.inf]


def measure_segments(model: nn.Module, batches: Batches, ignore_index: int) -> Dict[str, float]:
    """Accuracy (percent of pixels) of small / medium / large ground-truth segments of the non-background
    classes, the bins being the tertiles of the segments' areas (4-connected components of at least
    0.01 % of the image, :func:`segment_records_of`) over the validation set
    (:func:`metrics.accuracy_by_area`)."""
    recs = segment_records_of(model, batches, ignore_index)
    edges = area_edges(recs)
    acc = M.accuracy_by_area(recs, edges)
    return {"acc_small": acc[0], "acc_medium": acc[1], "acc_large": acc[2],
            "area_small_max": edges[1], "area_medium_max": edges[2], "segments": float(len(recs))}


# ---------------------------------------------------------------------------------------- EM and T
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
    from segattn.lowrank.mappers import em_step

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


def _grads(loss: Tensor, *wrt: Tensor) -> List[float]:
    """``||d loss / d t||_F`` for each tensor t (0 where t does not reach the loss)."""
    live = [t for t in wrt if t.requires_grad]
    grads = iter(torch.autograd.grad(loss, live, allow_unused=True)) if live else iter(())
    norms = []
    for t in wrt:
        g = next(grads) if t.requires_grad else None
        norms.append(float(g.norm()) if g is not None else 0.0)
    return norms


def measure_gradients(model: nn.Module, batches: Batches, ignore_index: int) -> Dict[str, float]:
    """Gradient that reaches the backbone and the module's input, per image (eval-mode BatchNorm).

    For each validation image alone, ``L`` = mean cross-entropy over its labelled pixels;
    ``grad_backbone`` = ``||dL/df||_F`` at the backbone's last feature map f, ``grad_module_in`` =
    ``||dL/dr||_F`` at the module's input r (in the generic layout r reaches the loss only through the
    module). Both with the EM iterations cut from autograd as in training (``*_cut``; EMA's default)
    and differentiated exactly (``*_exact``); equal for modules without EM. Means over images.
    """
    module = context_slot(model)
    if module is None:
        return {}
    feats: Dict[str, Tensor] = {}

    def grab(mod: nn.Module, args: Tuple[Any, ...], out: Any) -> None:
        feats["f"] = out[-1] if isinstance(out, (list, tuple)) else out

    out: Dict[str, List[float]] = {}
    # without EM iterations cut from autograd the two modes are the same computation: run it once
    modes = ("cut", "exact") if any(not m.backprop for m in em_mappers(model)) else ("cut",)
    hook = model.backbone.register_forward_hook(grab)
    try:
        for mode in modes:
            ctx = em_gradient_cut(model) if mode == "cut" else contextlib.nullcontext()
            with ctx:
                for images, masks in batches:
                    for i in range(images.shape[0]):
                        with capture(module) as st:
                            loss = F.cross_entropy(logits_of(model, images[i:i + 1]).float(), masks[i:i + 1],
                                                   ignore_index=ignore_index)
                        # gradients at f and r only: nothing is back-propagated into the backbone
                        gf, gr = _grads(loss, feats["f"], st["in"])
                        out.setdefault(f"grad_backbone_{mode}", []).append(gf)
                        out.setdefault(f"grad_module_in_{mode}", []).append(gr)
    finally:
        hook.remove()
    if modes == ("cut",):
        out["grad_backbone_exact"] = out.get("grad_backbone_cut", [])
        out["grad_module_in_exact"] = out.get("grad_module_in_cut", [])
    return {k: _nanmean(v) for k, v in out.items()}


__all__ = ["context_slot", "module_name", "measure_robustness", "measure_features", "measure_segments",
           "em_curves", "measure_stage_swap", "measure_gradients", "fgsm", "Confusion", "attention_rows",
           "lowrank_parts", "em_stages", "em_gradient_cut", "at_eval_scale"]
