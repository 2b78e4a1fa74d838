"""Inference on image files: colourised masks and overlays.

For every input image ``NAME.ext`` two files are written to the output folder:

- ``NAME_mask.png``: a palette ("P" mode) PNG whose pixel values are the class ids and whose
  palette is the dataset's colours (open it as labels or look at it as a picture);
- ``NAME_overlay.png``: the image with the colourised mask blended over it (``alpha``).

Inputs that share a stem get distinct names (``a.png`` + ``a.jpg`` -> ``a_png_*`` / ``a_jpg_*``;
the same name in two folders -> ``a_png`` / ``a_png_2``), so no result overwrites another. Existing
output files are refused unless ``overwrite=True``; every file is written atomically. An input that
cannot be decoded is skipped with a warning and counted (``strict=True`` stops at it instead).
Images are decoded as the datasets do (:func:`segattn.data.datasets.base.load_image`: 16-bit images
are scaled to 8 bits). A model comes from a training checkpoint (``last.pt`` / ``best.pt``: the
config, class names and palette travel with it) or a ``save_pretrained`` folder.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from segattn.checks import warn_non_finite
from segattn.data.datasets.base import DatasetError, load_image
from segattn.data.palette import bit_palette, overlay
from segattn.engine import build
from segattn.engine.config import Config, apply_overrides, config_from_dict
from segattn.engine.distributed import pick_device
from segattn.engine.evaluate import infer
from segattn.engine.run import load_weights, read_checkpoint, refuse_model_overrides
from segattn.errors import SegattnError
from segattn.io import atomic_write, check_writable_dir
from segattn.models.segmentor import finite_check_off
from segattn.progress import Progress

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class PredictResult:
    """What :func:`predict` did: one entry per image written, and the inputs skipped with the reason."""

    written: List[Dict[str, str]] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)


def load_model(checkpoint: str, overrides: Sequence[str] = (), device: str = "cpu"
               ) -> Tuple[nn.Module, Config, Dict[str, Any]]:
    """(eval model, run config, meta with ``num_classes``/``classes``/``palette``/``ignore_index``)."""
    from segattn.models.weights import is_pretrained_source

    if is_pretrained_source(checkpoint):  # a save_pretrained folder or a Hub repo id
        from segattn.models.weights import from_pretrained, pretrained_meta, pretrained_run_config

        refuse_model_overrides(checkpoint, overrides)
        model = from_pretrained(checkpoint)
        meta = pretrained_meta(model)  # class names, palette; normalisation and eval settings in the config:
        cfg = config_from_dict(apply_overrides(pretrained_run_config(model.pretrained_dir), overrides))
    else:
        ckpt = read_checkpoint(checkpoint)
        if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("meta"), dict) \
                or "num_classes" not in ckpt["meta"]:
            raise SegattnError(f"{checkpoint} is not a segattn training checkpoint (no 'config' and 'meta' with "
                               "'num_classes'); use a save_pretrained folder or a checkpoint written by `segattn train`")
        cfg = config_from_dict(apply_overrides(ckpt["config"], overrides))
        meta = dict(ckpt["meta"])
        model = build.build_model(cfg.model, int(meta["num_classes"]))
        load_weights(model, ckpt, checkpoint)
    if not meta.get("palette"):
        meta["palette"] = bit_palette(int(meta["num_classes"]))
    return model.to(device).eval(), cfg, meta


def list_images(inputs: Sequence[str]) -> List[Path]:
    """Files given directly plus the images inside given folders (sorted); a path given twice counts once."""
    out: List[Path] = []
    seen = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found = [p]
        else:
            raise FileNotFoundError(f"input {item!r} is neither an image file nor a folder")
        for f in found:
            key = os.path.realpath(f)
            if key not in seen:
                seen.add(key)
                out.append(f)
    if not out:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {list(inputs)}")
    return out


def output_names(paths: Sequence[Path]) -> List[str]:
    """One distinct output stem per input (case-insensitively distinct, for case-insensitive file systems).

    A stem used by one input stays as it is; inputs sharing a stem get their extension appended
    (``a_png``, ``a_jpg``) and, if still equal (same name in two folders), ``_2``, ``_3``, ...
    """
    counts = Counter(p.stem.lower() for p in paths)
    used: set = set()
    names = []
    for p in paths:
        base = p.stem if counts[p.stem.lower()] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}"
        name, k = base, 2
        while name.lower() in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name.lower())
        names.append(name)
    return names


def preprocess(image: np.ndarray, cfg: Config) -> torch.Tensor:
    """(1, 3, H, W) float tensor as the training pipeline feeds the model (normalised or [0, 1])."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float()
    if cfg.data.transforms:
        mean = torch.tensor(cfg.data.mean).view(3, 1, 1)
        std = torch.tensor(cfg.data.std).view(3, 1, 1)
        x = (x - mean) / std
    else:
        x = x / 255.0
    return x.unsqueeze(0)


def inference_scales(shape: Tuple[int, int], cfg: Config) -> List[float]:
    """Eval scales, times the keep-ratio factor of ``data.val_resize`` if set (as in validation)."""
    box = cfg.data.val_resize
    factor = 1.0
    if box:
        long_side, short_side = max(box), min(box)
        factor = min(long_side / max(shape), short_side / min(shape))
    return [s * factor for s in (cfg.eval.scales or [1.0])]


@torch.no_grad()
def predict_labels(model: nn.Module, image: np.ndarray, cfg: Config, num_classes: int,
                   device: str = "cpu", name: Optional[str] = None) -> np.ndarray:
    """(H, W) int64 labels for an (H, W, 3) uint8 image with the config's eval settings; warns
    (``NonFiniteInputWarning``, naming ``name``) when the preprocessed image holds NaN / inf."""
    what = f"image {name or '(array)'}"
    raw_bad = np.asarray(image).dtype.kind == "f" and warn_non_finite(np.asarray(image), what)
    x = preprocess(image, cfg).to(device)
    if not raw_bad:
        warn_non_finite(x, f"{what} after preprocessing")
    e = cfg.eval
    with finite_check_off(model):  # warned above, naming the image
        scores = infer(model, x, num_classes, e.mode, e.crop_size, e.stride, inference_scales(image.shape[:2], cfg),
                       e.flip)
    return scores.argmax(1)[0].cpu().numpy()


def save_mask(labels: np.ndarray, palette: Sequence[Sequence[int]], path: str) -> None:
    """Palette PNG, written atomically: pixel value = class id (values above 255 are clipped)."""
    from PIL import Image

    img = Image.fromarray(np.clip(labels, 0, 255).astype(np.uint8), mode="P")
    flat = [int(v) for c in palette for v in c][: 256 * 3]
    img.putpalette(flat + [0] * (768 - len(flat)))
    atomic_write(path, lambda f: img.save(f, format="PNG"))


def save_rgb(image: np.ndarray, path: str) -> None:
    """(H, W, 3) uint8 image as a PNG, written atomically."""
    from PIL import Image

    atomic_write(path, lambda f: Image.fromarray(image).save(f, format="PNG"))


def planned_outputs(images: Sequence[Path], out_dir: str) -> List[Tuple[Path, str, str]]:
    """(image, mask path, overlay path) for every input, with distinct names (see :func:`output_names`)."""
    return [(img, os.path.join(out_dir, f"{name}_mask.png"), os.path.join(out_dir, f"{name}_overlay.png"))
            for img, name in zip(images, output_names(images))]


def check_outputs(plan: Sequence[Tuple[Path, str, str]], out_dir: str, overwrite: bool) -> None:
    """Before any work: ``out_dir`` must be writable and, unless ``overwrite``, hold none of the outputs."""
    check_writable_dir(out_dir)
    if overwrite:
        return
    existing = [p for _, mask, over in plan for p in (mask, over) if os.path.lexists(p)]
    if existing:
        raise SegattnError(f"{len(existing)} output file(s) already exist in {out_dir} (e.g. "
                           f"{os.path.basename(existing[0])}); pass --overwrite to replace them or choose another --out")


def predict_files(model: nn.Module, cfg: Config, meta: Dict[str, Any], inputs: Sequence[str], out_dir: str,
                  device: str = "cpu", alpha: float = 0.5, strict: bool = False, overwrite: bool = False,
                  show_progress: bool = True) -> PredictResult:
    """Run ``model`` on every image in ``inputs``; write mask and overlay PNGs (see the module docstring)."""
    plan = planned_outputs(list_images(inputs), out_dir)
    check_outputs(plan, out_dir, overwrite)
    result = PredictResult()
    palette = meta["palette"]
    bar = Progress(plan, desc="predict", unit="img", enabled=show_progress)
    for path, mask_path, over_path in bar:
        try:
            image = load_image(str(path))
        except DatasetError as exc:
            if strict:
                raise SegattnError(f"{exc} (--strict stops at the first unreadable input)") from None
            result.skipped.append((str(path), str(exc)))
            bar.write(f"segattn predict: warning: skipped {path}: {exc}")
            continue
        labels = predict_labels(model, image, cfg, int(meta["num_classes"]), device, name=str(path))
        os.makedirs(out_dir, exist_ok=True)
        save_mask(labels, palette, mask_path)
        save_rgb(overlay(image, labels, palette, alpha), over_path)
        result.written.append({"image": str(path), "mask": mask_path, "overlay": over_path})
    return result


def predict(checkpoint: str, inputs: Sequence[str], out_dir: str, overrides: Sequence[str] = (),
            device: Optional[str] = None, alpha: float = 0.5, strict: bool = False, overwrite: bool = False,
            show_progress: bool = True) -> PredictResult:
    """Load ``checkpoint`` and predict every image in ``inputs`` into ``out_dir``.

    Checks first (before loading the model): the inputs exist, the device is available, ``out_dir``
    is writable and holds none of the outputs (unless ``overwrite``).
    """
    if not 0.0 <= alpha <= 1.0:
        raise SegattnError(f"--alpha must be in [0, 1], got {alpha}")
    dev = pick_device(device or "auto")
    check_outputs(planned_outputs(list_images(inputs), out_dir), out_dir, overwrite)
    model, cfg, meta = load_model(checkpoint, overrides, str(dev))
    return predict_files(model, cfg, meta, inputs, out_dir, str(dev), alpha, strict, overwrite, show_progress)
