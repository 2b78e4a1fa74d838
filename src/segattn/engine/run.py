"""``segattn eval``: a checkpoint on the validation split with the config's eval settings (torchrun-aware)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence

from torch.utils.data import DataLoader

from segattn.engine import build
from segattn.engine.checkpoint import load_checkpoint, model_state
from segattn.engine.config import apply_overrides, config_from_dict, load_config_dict
from segattn.engine.distributed import ShardSampler, cleanup, init_distributed
from segattn.engine.evaluate import evaluate
from segattn.engine.metrics import json_safe


def run_evaluation(checkpoint: str, config: Optional[str] = None, overrides: Sequence[str] = (),
                   out: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Metrics dict (on rank 0; ``None`` on other ranks); also written to ``out`` as JSON if given."""
    ckpt = load_checkpoint(checkpoint)
    if config is not None:
        data = load_config_dict(config)
    elif "config" in ckpt:
        data = ckpt["config"]
    else:
        raise ValueError(f"{checkpoint} holds no config; pass --config")
    cfg = config_from_dict(apply_overrides(data, overrides))
    info = init_distributed(cfg.train.device)
    try:
        val = build.build_dataset_split(cfg.data, cfg.data.val_split, train=False)
        k = int(val.num_classes)
        model = build.build_model(cfg.model, k)
        model.load_state_dict(model_state(ckpt))
        model.to(info.device).eval()
        loader = DataLoader(val, batch_size=cfg.data.val_batch_size, num_workers=cfg.data.num_workers,
                            sampler=ShardSampler(len(val), info.world_size, info.rank))
        e = cfg.eval
        amp = build.amp_dtype(cfg.train.amp, cfg.train.amp_dtype, info.device)
        metrics = evaluate(model, loader, k, int(getattr(val, "ignore_index", 255)), list(val.classes), info.device,
                           e.mode, e.crop_size, e.stride, e.scales, e.flip, e.max_samples, amp)
    finally:
        cleanup(info)
    if not info.is_main:
        return None
    metrics = {**metrics, "checkpoint": os.path.abspath(checkpoint), "eval": vars(cfg.eval).copy(),
               "split": cfg.data.val_split, "dataset": cfg.data.dataset}
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(json_safe(metrics), f, indent=2)
    return metrics
