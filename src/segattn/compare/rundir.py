"""A comparison run's folder: its file names, its lock and the source commit that trained it
(shared by :mod:`segattn.compare.runner` and :mod:`segattn.compare.reuse`)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional, Union

from segattn.engine.workdir import WorkDirError, WorkDirLock

RESULT = "result.json"
RUN_CONFIG = "compare_config.json"
ANALYSIS = "analysis.json"  # written by `segattn analyze` into a run folder
FINAL_WEIGHTS = "final.pt"  # the finished run's weights (no optimiser state), kept for `segattn analyze`


def run_dir(out: Union[str, Path], entry: str, seed: int) -> Path:
    return Path(out) / "runs" / entry / f"seed{seed}"


def source_commit() -> Optional[str]:
    """Git commit of the source tree segattn is imported from (``+dirty`` with local changes), or None."""
    root = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def claim_run(rdir: Path) -> Optional[WorkDirLock]:
    """Take the run folder's lock (``<rdir>/.segattn.lock``, :class:`WorkDirLock`), or None when a live
    process holds it: several ``segattn compare`` processes on one ``--out`` share the runs (each
    trains the ones no other is training), and none of them touches a run another is writing. A lock
    left by a dead process is taken over."""
    rdir.mkdir(parents=True, exist_ok=True)
    claim = WorkDirLock(str(rdir))
    try:
        claim.acquire()
    except WorkDirError:
        return None
    return claim


__all__ = ["ANALYSIS", "RESULT", "RUN_CONFIG", "FINAL_WEIGHTS", "run_dir", "source_commit", "claim_run"]
