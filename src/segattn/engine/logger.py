"""Run logs on rank 0: JSONL metrics, TensorBoard scalars (if installed), a progress bar (tqdm if installed).

Every record is one JSON line in ``<work_dir>/metrics.jsonl`` such as
``{"kind": "train", "iter": 50, "loss": 1.23, "lr": 0.0099, "time": 12.3}``; non-main ranks log nothing.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Dict, Optional

from segattn.engine.metrics import json_safe


class RunLogger:
    """Writes records to JSONL (+ TensorBoard) and drives a progress bar; inert when ``enabled`` is False."""

    def __init__(self, work_dir: str, total: int, start: int = 0, enabled: bool = True,
                 tensorboard: bool = True, progress: bool = True) -> None:
        self.enabled = enabled
        self.start_time = time.time()
        self.file = None
        self.tb = None
        self.bar = None
        self.total = total
        self.last_print = 0.0
        if not enabled:
            return
        os.makedirs(work_dir, exist_ok=True)
        self.file = open(os.path.join(work_dir, "metrics.jsonl"), "a")
        if tensorboard:
            self.tb = _summary_writer(os.path.join(work_dir, "tb"))
        if progress:
            self.bar = _progress_bar(total, start)

    def log(self, kind: str, step: int, values: Dict[str, Any]) -> None:
        """Append one record; scalar values also go to TensorBoard as ``<kind>/<name>``."""
        if not self.enabled:
            return
        record = {"kind": kind, "iter": step, "time": round(time.time() - self.start_time, 3), **values}
        assert self.file is not None
        self.file.write(json.dumps(json_safe(record)) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(float(value)):
                    self.tb.add_scalar(f"{kind}/{key}", value, step)

    def advance(self, step: int, postfix: Optional[Dict[str, float]] = None) -> None:
        """Move the progress bar to ``step`` (or print a line every 10 s without tqdm)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = step
            if postfix:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            self.bar.refresh()
        elif time.time() - self.last_print > 10 or step == self.total:
            self.last_print = time.time()
            extra = " ".join(f"{k}={v:.4g}" for k, v in (postfix or {}).items())
            print(f"[{step}/{self.total}] {extra}", file=sys.stderr, flush=True)

    def info(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.file is not None:
            self.file.close()
        self.bar = self.tb = self.file = None


def _summary_writer(path: str) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is an optional extra
        return None
    return SummaryWriter(path)


def _progress_bar(total: int, start: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    if not sys.stderr.isatty():  # logs and CI: plain periodic lines instead
        return None
    return tqdm(total=total, initial=start, dynamic_ncols=True, file=sys.stderr, desc="train")
