"""Cost of a trained run: parameters, MACs (whole model and context modules), latency and the
peak memory of one training step, each measured at the run's own sizes."""

from __future__ import annotations

import copy
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn


def _context_modules(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    from segattn.modules.base import ContextModule

    found: List[Tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        if isinstance(m, ContextModule) and not any(name.startswith(f + ".") for f, _ in found):
            found.append((name, m))
    return found


@torch.no_grad()
def model_macs(model: nn.Module, image: torch.Tensor) -> Tuple[int, int]:
    """(whole-model MACs by FlopCounterMode, sum of context modules' ``flops(H, W)``) for one image."""
    from torch.utils.flop_counter import FlopCounterMode

    sizes: Dict[str, Tuple[int, int]] = {}
    hooks = []
    for name, m in _context_modules(model):
        hooks.append(m.register_forward_pre_hook(lambda mod, args, n=name: sizes.__setitem__(n, tuple(args[0].shape[-2:]))))
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(image)
    finally:
        for h in hooks:
            h.remove()
    mods = dict(_context_modules(model))
    context = sum(int(mods[n].flops(*hw)) for n, hw in sizes.items())
    return int(counter.get_total_flops()) // 2, context


@torch.no_grad()
def latency_ms(model: nn.Module, image: torch.Tensor, rounds: int = 5) -> float:
    """Median eval-mode forward time of one image (after one warm-up pass)."""
    model.eval()
    model(image)
    times = []
    for _ in range(rounds):
        if image.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(image)
        if image.is_cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times))


def train_step_memory_mb(model: nn.Module, images: torch.Tensor, masks: torch.Tensor,
                         run_config: Optional[Path] = None) -> float:
    """Peak memory of one training step (forward + backward at the training batch), in MiB.

    CUDA: growth of ``max_memory_allocated`` around the step, on a copy of ``model``. CPU: the method
    of ``segattn bench --memory`` (growth of the resident set's high-water mark, the kernel's mark
    reset first), in a fresh subprocess that builds the run's model from ``run_config`` (the run's
    ``compare_config.json``), so the training process's cached allocations do not hide the step.
    """
    if images.is_cuda:
        net = copy.deepcopy(model).train()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        train_step(net, images, masks)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if run_config is None:
        raise ValueError("the CPU memory probe needs the run's config file")
    shape = [int(v) for v in images.shape]
    k = int(getattr(model, "num_classes", 0) or int(masks.max()) + 1)
    cmd = [sys.executable, "-m", "segattn.compare.memprobe", str(run_config), json.dumps(shape), str(k)]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed: {proc.stderr.strip()[-300:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"])


def train_step(net: nn.Module, images: torch.Tensor, masks: torch.Tensor) -> None:
    out = net(images)
    logits = out["out"] if isinstance(out, dict) else out
    torch.nn.functional.cross_entropy(logits.float(), masks, ignore_index=255).backward()


def measure_cost(model: nn.Module, train_set: Any, val_set: Any, cfg: Any, device: torch.device,
                 run_config: Optional[Path] = None) -> Dict[str, Any]:
    """Parameters, MACs, latency and training-step memory, all at the run's own sizes (the first
    validation image at the single ``eval.scales`` factor if there is one; the training batch shape).

    A measurement that fails (an operator FlopCounterMode cannot count, say) is recorded as NaN with
    its error in ``errors``; it never costs the trained run."""
    image = val_set[0][0].unsqueeze(0).to(device)
    scales = list(cfg.eval.scales or [1.0])
    if len(scales) == 1 and scales[0] != 1.0:  # the size the model runs at (eval.scales), as in evaluation
        h, w = image.shape[-2:]
        size = (max(1, round(h * scales[0])), max(1, round(w * scales[0])))
        image = torch.nn.functional.interpolate(image, size=size, mode="bilinear", align_corners=False,
                                                antialias=scales[0] < 1)
    bs = cfg.data.batch_size
    batch = [train_set[i] for i in range(min(bs, len(train_set)))]
    images = torch.stack([b[0] for b in batch]).to(device)
    masks = torch.stack([b[1] for b in batch]).to(device).long()
    cost: Dict[str, Any] = {"params": int(sum(p.numel() for p in model.parameters())), "macs": math.nan,
                            "context_macs": math.nan, "eval_size": list(image.shape[-2:]), "latency_ms": math.nan,
                            "train_step_mem_mb": math.nan, "train_batch": [int(images.shape[0]), *images.shape[-2:]],
                            "errors": {}}
    steps: Dict[str, Callable[[], Any]] = {
        "macs": lambda: cost.update(zip(("macs", "context_macs"), model_macs(model, image))),
        "latency_ms": lambda: cost.update(latency_ms=latency_ms(model, image)),
        "train_step_mem_mb": lambda: cost.update(
            train_step_mem_mb=train_step_memory_mb(model, images, masks, run_config)),
    }
    for key, step in steps.items():
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - recorded in the result, never fatal
            cost["errors"][key] = f"{type(exc).__name__}: {exc}"[:300]
    return cost
