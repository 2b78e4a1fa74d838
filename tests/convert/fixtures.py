"""The mmseg 1.2.2 fixtures (``scripts/make_mmseg_fixtures.py``): config text, keys, expected logits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from tests.convert.mmseg_synth import synth_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "mmseg"
NAMES: List[str] = sorted(p.stem for p in FIXTURES.glob("*.json"))


def record(name: str) -> Dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def expected(name: str) -> Dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def state_dict(rec: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The fixture's mmseg state dict (modules registered under two names hold one value, as in mmseg)."""
    sd = synth_state_dict(rec["keys"])
    for key, source in rec.get("tied", {}).items():
        sd[key] = sd[source].clone()
    return sd


def write_checkpoint(rec: Dict[str, Any], path: Path, *, meta_key: str = "cfg", **extra: Any) -> Path:
    """An mmseg-runner-style checkpoint file: ``{"meta": {cfg, dataset_meta, ...}, "state_dict": ...}``."""
    meta: Dict[str, Any] = {meta_key: rec["cfg"], "dataset_meta": rec["dataset_meta"], "mmseg_version": "1.2.2",
                            "iter": 80000, "seed": 0}
    torch.save({"meta": meta, "state_dict": state_dict(rec), **extra}, path)
    return path


def mmseg_available() -> bool:
    """mmsegmentation importable here (a venv made for the fixtures; never a segattn dependency)."""
    try:
        import mmseg  # noqa: F401
    except Exception:  # noqa: BLE001 - mmcv-lite without its placeholder raises ModuleNotFoundError
        return False
    return True


def load_script(name: str) -> Any:
    """``scripts/<name>.py`` imported as a module (the fixture generators, for the live tests)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[2] / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_folder_dataset(root: Path, classes: List[str], size: tuple = (40, 56), n: int = 2) -> Path:
    """A ``folder`` dataset of ``n`` random images and masks over ``classes`` (val list ``0..n-1``)."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, len(classes), size, dtype=np.uint8)).save(
            root / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    (root / "val.txt").write_text("".join(f"{i}\n" for i in range(n)))
    return root
