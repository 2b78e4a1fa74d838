"""Tiny saved models and images for the viz CLI and page tests (no training, a few seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import segattn
from tests.helpers import perturb_


def save_tiny(path, name: str) -> str:
    torch.manual_seed(0)
    model = segattn.create_model(name, num_classes=3, backbone="resnet18c", output_stride=16, channels=16)
    perturb_(model).eval()
    model.save_pretrained(path)
    return str(path)


def scene(height: int = 64, width: int = 96, seed: int = 0) -> np.ndarray:
    """Sky, road and a box: an image with regions, so the pictures are not noise."""
    rng = np.random.RandomState(seed)
    img = np.zeros((height, width, 3), np.uint8)
    img[: height // 3] = (110, 160, 230)
    img[height // 3:] = (90, 90, 90)
    img[height // 4: height // 2, width // 3: width // 2] = (200, 60, 40)
    return np.clip(img.astype(np.int64) + rng.randint(-12, 12, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {n: save_tiny(root / n, n) for n in ("ccnet", "fcn", "deeplabv3")}


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    labels = root / "labels"
    labels.mkdir()
    for i in range(2):
        img = scene(seed=i)
        Image.fromarray(img).save(root / f"scene{i}.png")
        mask = np.zeros(img.shape[:2], np.uint8)
        mask[img.shape[0] // 3:] = 1
        mask[:2] = 255  # the ignore index
        Image.fromarray(mask).save(labels / f"scene{i}.png")
    return root
