"""Subprocess side of :func:`segattn.compare.cost.train_step_memory_mb` on CPU.

``python -m segattn.compare.memprobe RUN_CONFIG '[B, C, H, W]' NUM_CLASSES`` builds the run's model
from its ``compare_config.json`` and prints the growth of the resident set's high-water mark during
one forward + backward at that batch shape (the method of ``segattn bench --memory``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from segattn.compare.cost import train_step
from segattn.compare.plan import Entry
from segattn.compare.runner import build_entry_model
from segattn.engine.config import config_from_dict


def main(run_config: str, shape_json: str, num_classes: int) -> None:
    """Print ``{"peak_mb": ...}``: resident-set growth of one training step of the run's model."""
    from segattn.bench.measure import _reset_peak, _status_kib

    data = json.loads(Path(run_config).read_text())
    cfg = config_from_dict({k: v for k, v in data.items() if not k.startswith("_")})
    torch.set_num_threads(int(cfg.train.threads or 1))
    b, c, h, w = json.loads(shape_json)
    entry = Entry(name=data.get("_entry", {}).get("name", "probe"), model=cfg.model.name,
                  reasoner=data.get("_entry", {}).get("reasoner"))
    net = build_entry_model(cfg, entry, num_classes, 0).train()
    train_step(net, torch.rand(1, c, 32, 32), torch.zeros(1, 32, 32, dtype=torch.long))  # warm-up outside
    net.zero_grad(set_to_none=True)
    images, masks = torch.rand(b, c, h, w), torch.randint(0, num_classes, (b, h, w))
    if not _reset_peak():
        print(json.dumps({"peak_mb": math.nan}))
        return
    base = _status_kib("VmRSS")
    train_step(net, images, masks)
    print(json.dumps({"peak_mb": max(_status_kib("VmHWM") - base, 0) / 1024}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
