"""Fan a plan's runs out: ``-j N`` local worker processes, or one SLURM job per run through submitit.

Every run goes through :func:`segattn.compare.runner.run_one`, which takes the run folder's lock
(``runs/<entry>/seed<k>/.segattn.lock``) before touching it: workers, SLURM jobs and other
``segattn compare`` processes on the same ``--out`` never train one run twice, and results land in
the same folders whichever way they were trained.

* ``local`` with ``workers = N``: a pool of N fresh (spawned) processes, one run each at a time;
  Ctrl-C stops every worker's current run at its next step with a checkpoint.
* ``slurm``: ``submitit.AutoExecutor`` with ``partition``, ``time_min`` (minutes per run), ``cpus``
  and ``gpus`` per run; logs under ``OUT/submitit/``. The same code runs on submitit's ``local``
  and ``debug`` executors (``launcher_options["cluster"]``), which is how the tests run it.
"""

from __future__ import annotations

import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from segattn.compare.plan import Plan, PlanError

LAUNCHERS = ("local", "slurm")
RunOne = Callable[..., Dict[str, Any]]
AfterRun = Callable[[Path], Any]  # called with a run folder once its run is finished (compare --analyze)
SLURM_KEYS = ("partition", "time_min", "cpus", "gpus", "cluster")


def _line(row: Dict[str, Any], i: int, total: int) -> str:
    tail = f"mIoU {row['mIoU']:.2f}" if row["state"] == "done" else row["state"]
    return f"[{i}/{total}] {row['entry']} seed {row['seed']}: {tail}"


def run_pool(plan: Plan, dataset: str, todo: Sequence[Tuple[int, str]], out: Path, threads: Optional[int],
             extra: Sequence[str], keep_checkpoints: bool, workers: int, log: Callable[[str], None],
             run_one: RunOne, after_run: Optional[AfterRun] = None) -> List[str]:
    """Train ``todo`` ((seed, entry) pairs) on ``workers`` spawned processes; returns each run's state."""
    states: List[str] = []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(run_one, plan, dataset, name, seed, str(out), threads, list(extra), keep_checkpoints,
                               after_run) for seed, name in todo]
        try:
            for i, fut in enumerate(as_completed(futures), 1):
                row = fut.result()
                states.append(row["state"])
                log(_line(row, i, len(futures)))
        except KeyboardInterrupt:  # the workers got the signal too: they checkpoint and return
            for fut in futures:
                fut.cancel()
            states.append("interrupted")
    return states


def check_launcher(launcher: str, options: Dict[str, Any]) -> None:
    """Before any run: ``launcher`` is known, and for ``slurm`` submitit is installed and SLURM is
    reachable from here (``srun`` on the PATH; submitit's ``local`` / ``debug`` clusters need neither)."""
    if launcher not in LAUNCHERS:
        raise PlanError(f"--launcher must be one of {list(LAUNCHERS)}, got {launcher!r}")
    if launcher != "slurm" or options.get("cluster", "slurm") != "slurm":
        return
    try:
        import submitit  # noqa: F401
    except ImportError as exc:
        raise PlanError("--launcher slurm needs submitit (pip install 'segattn[slurm]')") from exc
    if shutil.which("srun") is None:
        raise PlanError("--launcher slurm: no SLURM here (`srun` is not on the PATH); run on a node of a SLURM "
                        "cluster, or use --launcher local")


def run_submitit(plan: Plan, dataset: str, todo: Sequence[Tuple[int, str]], out: Path, threads: Optional[int],
                 extra: Sequence[str], keep_checkpoints: bool, options: Dict[str, Any],
                 log: Callable[[str], None], run_one: RunOne, after_run: Optional[AfterRun] = None) -> List[str]:
    """One submitit job per run (SLURM, or submitit's ``local`` / ``debug`` executor); waits for all."""
    try:
        import submitit
    except ImportError as exc:
        raise PlanError("--launcher slurm needs submitit (pip install 'segattn[slurm]')") from exc

    unknown = sorted(set(options) - set(SLURM_KEYS))
    if unknown:
        raise PlanError(f"unknown launcher option(s) {unknown}; accepted: {list(SLURM_KEYS)}")
    cluster = options.get("cluster", "slurm")
    executor = submitit.AutoExecutor(folder=str(out / "submitit"), cluster=cluster)
    params: Dict[str, Any] = {"timeout_min": int(options.get("time_min") or 60),
                              "cpus_per_task": int(options.get("cpus") or threads or 1), "name": f"segattn-{plan.name}"}
    if options.get("gpus"):
        params["gpus_per_node"] = int(options["gpus"])
    if options.get("partition"):
        params["slurm_partition"] = str(options["partition"])
    executor.update_parameters(**params)
    jobs = [executor.submit(run_one, plan, dataset, name, seed, str(out), threads, list(extra), keep_checkpoints,
                            after_run) for seed, name in todo]
    log(f"submitted {len(jobs)} run(s) ({cluster}); job logs in {out / 'submitit'}")
    states = []
    for i, job in enumerate(jobs, 1):
        row = job.result()
        states.append(row["state"])
        log(_line(row, i, len(jobs)))
    return states


def dispatch(plan: Plan, dataset: str, todo: Sequence[Tuple[int, str]], out: Path, threads: Optional[int],
             extra: Sequence[str], keep_checkpoints: bool, workers: int, launcher: str, options: Dict[str, Any],
             log: Callable[[str], None], run_one: RunOne, after_run: Optional[AfterRun] = None) -> List[str]:
    """Train ``todo`` with the chosen launcher; returns the state of each run. ``run_one`` is
    :func:`segattn.compare.runner.run_one` (passed in: the runner imports this module, not the reverse;
    a module-level function, so it pickles into the worker processes and submitit jobs), as must be
    ``after_run``."""
    if launcher not in LAUNCHERS:
        raise PlanError(f"--launcher must be one of {list(LAUNCHERS)}, got {launcher!r}")
    if not todo:
        return []
    if launcher == "slurm":
        return run_submitit(plan, dataset, todo, out, threads, extra, keep_checkpoints, options, log, run_one, after_run)
    return run_pool(plan, dataset, todo, out, threads, extra, keep_checkpoints, workers, log, run_one, after_run)
