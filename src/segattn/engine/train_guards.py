"""The trainer's guards: a non-finite loss, batches without a labelled pixel, SIGINT/SIGTERM.

:class:`GuardMixin` is part of :class:`segattn.engine.train.Trainer` (see its module docstring for the
rules); the errors are re-exported there.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Dict

import torch
import torch.distributed as dist
from torch import Tensor

from segattn.engine.train_checkpoints import TrainingDiverged


class NoLabelledPixels(ValueError):
    """The training labels hold no pixel to learn from (all ``ignore_index``)."""


VOID_WINDOW = 20  # consecutive training batches without a labelled pixel that stop a run


class _StopFlag:
    """SIGINT/SIGTERM -> ``requested``; restores the previous handlers on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)



class GuardMixin:
    """Checks run every step (uses the trainer's ``cfg``, ``info``, ``meta``, ``scaler``, ``iteration``)."""

    def _check_finite(self, terms: Dict[str, Tensor]) -> None:
        """Stop on a non-finite loss (see the module docstring for the GradScaler tolerance)."""
        loss = terms["loss"].detach()
        if self.info.distributed:  # every rank stops together
            loss = loss.clone()
            dist.all_reduce(loss)
        if bool(torch.isfinite(loss)):
            self.nonfinite = 0
            return
        self.nonfinite += 1
        tolerance = self.cfg.train.nonfinite_tolerance if self.scaler.is_enabled() else 0
        if self.nonfinite > tolerance:
            parts = ", ".join(f"{k} {float(v):g}" for k, v in terms.items() if k != "loss")
            skipped = f" after {self.nonfinite - 1} skipped step(s)" if self.nonfinite > 1 else ""
            raise TrainingDiverged(f"training diverged at iteration {self.iteration + 1}: the loss is "
                                   f"{float(loss):g}{skipped} ({parts}); {self._divergence_hint()}")

    def _check_labelled(self, masks: Tensor) -> None:
        """Stop when :data:`VOID_WINDOW` batches in a row (fewer if the epoch or the run is shorter)
        hold no labelled pixel (see the module docstring)."""
        count = (masks != self.meta["ignore_index"]).sum()
        if self.info.distributed:  # every rank decides the same
            dist.all_reduce(count)
        if bool(count > 0):
            self.void_batches = 0
            return
        self.void_batches += 1
        window = min(VOID_WINDOW, self.iters_per_epoch, self.cfg.schedule.iters - self._start_iter)
        if self.void_batches >= max(1, window):
            raise NoLabelledPixels(
                f"no labelled pixel in {self.void_batches} training batch(es) in a row (iterations "
                f"{self.iteration - self.void_batches + 2}-{self.iteration + 1}): every label pixel is "
                f"ignore_index={self.meta['ignore_index']}; check the dataset's masks and its ignore_index "
                "(nothing can be learned from these labels, so training stopped)")

    def _stop_requested(self) -> bool:
        flag = self.stop.requested
        if self.info.distributed:
            t = torch.tensor([1.0 if flag else 0.0], device=self.device if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item() > 0)
        return flag

