"""Inference on image files: colourised masks and overlays.

For every input image ``NAME.ext`` two files are written to the output folder:

- ``NAME_mask.png``: a palette ("P" mode) PNG whose pixel values are the class ids and whose
  palette is the dataset's colours (open it as labels or look at it as a picture);
- ``NAME_overlay.png``: the image with the colourised mask blended over it (``alpha``).

A model comes from a training checkpoint (``last.pt`` / ``best.pt``: the config, class names and
palette travel with it) or a ``save_pretrained`` folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from segattn.data.palette import bit_palette, overlay
from segattn.engine import build
from segattn.engine.checkpoint import load_checkpoint, model_state
from segattn.engine.config import Config, apply_overrides, config_from_dict
from segattn.engine.evaluate import infer

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def load_model(checkpoint: str, overrides: Sequence[str] = (), device: str = "cpu"
               ) -> Tuple[nn.Module, Config, Dict[str, Any]]:
    """(eval model, run config, meta with ``num_classes``/``classes``/``palette``/``ignore_index``)."""
    if os.path.isdir(checkpoint):
        from segattn.models import from_pretrained

        model = from_pretrained(checkpoint)
        k = int(model.num_classes)
        mc = dict(getattr(model, "config", {}) or {})
        meta = {"num_classes": k, "classes": mc.get("classes") or [str(i) for i in range(k)],
                "palette": mc.get("palette"), "ignore_index": 255}
        cfg = config_from_dict(apply_overrides({}, overrides))
    else:
        ckpt = load_checkpoint(checkpoint)
        if "config" not in ckpt:
            raise ValueError(f"{checkpoint} is not a segattn training checkpoint (no 'config'); "
                             "use a save_pretrained folder or a checkpoint written by `segattn train`")
        cfg = config_from_dict(apply_overrides(ckpt["config"], overrides))
        meta = dict(ckpt["meta"])
        model = build.build_model(cfg.model, int(meta["num_classes"]))
        model.load_state_dict(model_state(ckpt))
    if not meta.get("palette"):
        meta["palette"] = bit_palette(int(meta["num_classes"]))
    return model.to(device).eval(), cfg, meta


def list_images(inputs: Sequence[str]) -> List[Path]:
    """Files given directly plus the images inside given folders (sorted)."""
    out: List[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"input {item!r} is neither an image file nor a folder")
    if not out:
        raise FileNotFoundError(f"no images found in {list(inputs)}")
    return out


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
                   device: str = "cpu") -> np.ndarray:
    """(H, W) int64 labels for an (H, W, 3) uint8 image with the config's eval settings."""
    x = preprocess(image, cfg).to(device)
    e = cfg.eval
    scores = infer(model, x, num_classes, e.mode, e.crop_size, e.stride, inference_scales(image.shape[:2], cfg), e.flip)
    return scores.argmax(1)[0].cpu().numpy()


def save_mask(labels: np.ndarray, palette: Sequence[Sequence[int]], path: str) -> None:
    """Palette PNG: pixel value = class id (values above 255 are clipped)."""
    from PIL import Image

    img = Image.fromarray(np.clip(labels, 0, 255).astype(np.uint8), mode="P")
    flat = [int(v) for c in palette for v in c][: 256 * 3]
    img.putpalette(flat + [0] * (768 - len(flat)))
    img.save(path)


def predict_files(model: nn.Module, cfg: Config, meta: Dict[str, Any], inputs: Sequence[str], out_dir: str,
                  device: str = "cpu", alpha: float = 0.5) -> List[Dict[str, str]]:
    """Run ``model`` on every image in ``inputs``; write mask and overlay PNGs; return the written paths."""
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    written = []
    palette = meta["palette"]
    for path in list_images(inputs):
        image = np.asarray(Image.open(path).convert("RGB"))
        labels = predict_labels(model, image, cfg, int(meta["num_classes"]), device)
        mask_path = os.path.join(out_dir, f"{path.stem}_mask.png")
        over_path = os.path.join(out_dir, f"{path.stem}_overlay.png")
        save_mask(labels, palette, mask_path)
        Image.fromarray(overlay(image, labels, palette, alpha)).save(over_path)
        written.append({"image": str(path), "mask": mask_path, "overlay": over_path})
    return written


def predict(checkpoint: str, inputs: Sequence[str], out_dir: str, overrides: Sequence[str] = (),
            device: Optional[str] = None, alpha: float = 0.5) -> List[Dict[str, str]]:
    """Load ``checkpoint`` and predict every image in ``inputs`` into ``out_dir``."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, cfg, meta = load_model(checkpoint, overrides, device)
    return predict_files(model, cfg, meta, inputs, out_dir, device, alpha)
