"""``segattn train --nproc N``: N local DDP processes, started by the launcher ``torchrun`` itself uses.

``torchrun --standalone --nproc_per_node N -m segattn train ...`` works too, but when a worker fails,
torchrun prints, after the worker's own ``segattn train: error: ...`` line, a report with its
launcher's traceback. ``--nproc N`` instead checks the config in this process first (a wrong key
fails before any worker starts), then starts the N workers with
``torch.distributed.launcher.api.elastic_launch`` (a standalone c10d rendezvous on localhost, no
restarts: what ``torchrun --standalone`` configures), each running ``python -m segattn train`` with
the same arguments, and waits. If a worker fails, its own error line is already on stderr; this
process adds one line naming the failed ranks and exit codes, and returns the first worker's exit
code (2 for bad input, 130 for an interrupt). Workers pick NCCL on GPUs and gloo on CPU
(:func:`segattn.engine.distributed.init_distributed`). Several machines: use ``torchrun`` (see the
training docs).
"""

from __future__ import annotations

import logging
import sys
import uuid
from typing import List, Sequence

from segattn.errors import SegattnError

ELASTIC_LOGGERS = ("torch.distributed.elastic", "torch.distributed.launcher")


class WorkersFailed(SegattnError):
    """One or more workers exited with an error (their own error lines come first)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def check_nproc(nproc: int) -> int:
    """``nproc`` if it is an integer >= 1, else ``SegattnError`` saying what is accepted."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise SegattnError(f"--nproc {nproc!r}: expected the number of local processes, an integer >= 1")
    return nproc


def launch_local(nproc: int, worker_args: Sequence[str]) -> int:
    """Run ``python -m segattn <worker_args>`` in ``nproc`` local DDP processes; 0 when all succeed,
    else :class:`WorkersFailed` (its ``exit_code`` is the first failed rank's)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=check_nproc(nproc), run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    quiet = [(logging.getLogger(name), logging.getLogger(name).level) for name in ELASTIC_LOGGERS]
    for logger, _ in quiet:  # the agent's own records repeat the workers' failure at length
        logger.setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, sys.executable)("-m", "segattn", *worker_args)
    except ChildFailedError as exc:
        raise _failed(exc.failures, nproc) from None
    finally:
        for logger, level in quiet:
            logger.setLevel(level)
    return 0


def _failed(failures: dict, nproc: int) -> WorkersFailed:
    """One line for the failed ranks: an exit code, or the signal that stopped a rank (the launcher
    stops the others once one fails); the exit code returned is the first rank's that exited itself."""
    ranks: List[int] = sorted(failures)
    codes = [int(failures[r].exitcode) for r in ranks]
    listed = ", ".join(f"rank {r} (exit code {c})" if c >= 0 else f"rank {r} (stopped by signal {-c})"
                       for r, c in zip(ranks, codes))
    own = [c for c in codes if c > 0]
    return WorkersFailed(f"{len(ranks)} of {nproc} worker(s) failed: {listed}; their own error lines are above",
                         own[0] if own else 1)
