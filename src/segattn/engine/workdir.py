"""A training run's work dir: one run at a time, never overwritten unasked, resumable from its stored config.

Rules (:func:`prepare_work_dir`, called by :class:`segattn.engine.train.Trainer` before any data or
model is built):

- **Lock.** ``<work_dir>/.segattn.lock`` holds the PID and host of the run using the folder; a second
  run into the same folder stops with an error naming them. A lock whose process is gone (same host,
  PID not running) is stale and removed with a note.
- **Temporary files** that a killed atomic save left (``.last.pt.<random>.tmp``, ...) are removed.
- **Fresh start.** A work dir that already holds anything is refused, unless ``train.overwrite`` is
  true: then the earlier run's files (checkpoints, logs, config, summary, TensorBoard folder) are
  removed first; other files are left alone.
- **Resume.** ``train.resume: auto`` continues from ``<work_dir>/last.pt``; there being none is an
  error (never a silent fresh start). A checkpoint path continues from that file. The config must
  equal the stored one (``<work_dir>/config.json``, else the checkpoint's): a difference is an
  error listing every changed key, unless ``train.allow_config_change`` is true. Keys that only
  steer the process (:data:`RUN_ONLY_KEYS`) may differ.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from segattn.engine.config import Config, ConfigError, config_differences, config_from_dict

LOCK_NAME = ".segattn.lock"
CONFIG_NAME = "config.json"
CHECKPOINT_NAME = "last.pt"
RUN_FILES = ("last.pt", "best.pt", "config.json", "metrics.jsonl", "summary.json", "tb")
# keys that steer the process, not what is trained: they may change when a run is resumed
RUN_ONLY_KEYS = ("train.resume", "train.overwrite", "train.allow_config_change", "train.work_dir", "train.device",
                 "train.progress", "train.tensorboard", "train.threads", "train.log_interval", "train.eval_interval",
                 "train.ckpt_interval", "data.num_workers")
_FRESH_LOCK_S = 10.0  # an unreadable lock younger than this may be being written right now


class WorkDirError(ValueError):
    """The work dir cannot be used as asked; the message says why and what to do."""


@dataclass
class RunStart:
    """What :func:`prepare_work_dir` decided: the checkpoint to resume (or ``None``) and notes to print."""

    resume_path: Optional[str] = None
    checkpoint: Optional[Dict[str, Any]] = None
    notes: List[str] = field(default_factory=list)


# -------------------------------------------------------------------------------------------- lock
def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WorkDirLock:
    """``<work_dir>/.segattn.lock``, created atomically (``O_EXCL``); :meth:`release` removes it."""

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.path = os.path.join(work_dir, LOCK_NAME)
        self.held = False
        self.stale: Optional[Dict[str, Any]] = None

    def _owner(self) -> Optional[Dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None
        except (OSError, ValueError):
            return None

    def _is_stale(self, owner: Optional[Dict[str, Any]]) -> bool:
        if owner is None:  # unreadable: stale unless it may be being written at this moment
            try:
                return time.time() - os.path.getmtime(self.path) > _FRESH_LOCK_S
            except OSError:
                return True
        return owner.get("host") == socket.gethostname() and not _process_alive(int(owner["pid"]))

    def acquire(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if not self._is_stale(owner):
                    who = (f"pid {owner['pid']} on {owner.get('host')}, started {owner.get('started')}" if owner
                           else "a process that is writing its lock")
                    raise WorkDirError(
                        f"work dir {self.work_dir} is in use by another run ({who}); wait for it to finish or "
                        f"choose another --work-dir (if that run is gone, delete {self.path})") from None
                self.stale = owner or {}
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            except OSError as exc:
                raise WorkDirError(f"work dir {self.work_dir} is not writable: {exc.strerror or exc}") from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
            self.held = True
            return
        raise WorkDirError(f"could not take the lock {self.path} (another run keeps creating it)")

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner is None or owner.get("pid") == os.getpid():
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
            self.held = False


# ------------------------------------------------------------------------------------------ helpers
def missing_dirs(path: str) -> List[str]:
    """``path`` and those of its parents that do not exist yet, deepest first (what a run would create)."""
    out, p = [], os.path.abspath(path)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        out.append(p)
        p = os.path.dirname(p)
    return out


def remove_empty_dirs(dirs: List[str]) -> None:
    """Remove each of ``dirs`` (deepest first) that exists and is empty: a failed start leaves no trace."""
    for d in dirs:
        try:
            os.rmdir(d)
        except OSError:  # not empty, or already gone
            pass


def is_temp_file(name: str) -> bool:
    """A temporary file of :func:`segattn.io.atomic_write` for one of the run's files."""
    return name.endswith(".tmp") and any(name.startswith(f".{run}.") for run in RUN_FILES)


def clean_temp_files(work_dir: str) -> List[str]:
    """Remove what killed atomic saves left behind; returns the removed names."""
    removed = []
    for name in sorted(os.listdir(work_dir)):
        if is_temp_file(name):
            try:
                os.unlink(os.path.join(work_dir, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def run_entries(work_dir: str) -> List[str]:
    """Names in ``work_dir`` other than the lock (and temporary files)."""
    if not os.path.isdir(work_dir):
        return []
    return sorted(n for n in os.listdir(work_dir) if n != LOCK_NAME and not is_temp_file(n))


def clear_run(work_dir: str) -> List[str]:
    """Remove an earlier run's files (:data:`RUN_FILES`); returns the removed names."""
    removed = []
    for name in RUN_FILES:
        path = os.path.join(work_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
        else:
            continue
        removed.append(name)
    return removed


def stored_config(work_dir: str) -> Optional[Dict[str, Any]]:
    """The config a run stored in ``work_dir`` (``config.json``), or ``None``."""
    path = os.path.join(work_dir, CONFIG_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise WorkDirError(f"stored config {path} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise WorkDirError(f"stored config {path} holds a {type(data).__name__}, expected a mapping")
    return data


def resume_config_dict(resume: str, work_dir: Optional[str]) -> Dict[str, Any]:
    """The stored config of a run to resume: ``<work_dir>/config.json`` for ``auto``, else the checkpoint's."""
    from segattn.engine.checkpoint import load_checkpoint

    if resume == "auto":
        if not work_dir:
            raise WorkDirError("--resume auto needs --work-dir (the folder of the run to continue) or --config")
        data = stored_config(work_dir)
        if data is not None:
            return data
        resume = os.path.join(work_dir, CHECKPOINT_NAME)
        if not os.path.isfile(resume):
            raise WorkDirError(f"--resume auto: {work_dir} holds no run to resume (no {CONFIG_NAME}, no {CHECKPOINT_NAME})")
    ckpt = load_checkpoint(resume)
    if not isinstance(ckpt.get("config"), dict):
        raise WorkDirError(f"checkpoint {resume} stores no config; pass --config")
    return ckpt["config"]


def config_changes(stored: Dict[str, Any], cfg: Config) -> List[str]:
    """Differences ``stored -> cfg`` (dotted keys), both normalised; process-only keys ignored."""
    try:
        before = config_from_dict(stored).to_dict()
    except ConfigError as exc:
        raise WorkDirError(f"the stored config is not valid any more: {exc}") from None
    return config_differences(before, cfg.to_dict(), ignore=RUN_ONLY_KEYS)


# ------------------------------------------------------------------------------------------ prepare
def _resume_path(cfg: Config) -> Optional[str]:
    r, work_dir = cfg.train.resume, cfg.train.work_dir
    if not r:
        return None
    if r != "auto":
        return r
    path = os.path.join(work_dir, CHECKPOINT_NAME)
    if not os.path.isfile(path):
        what = ("does not exist" if not os.path.isdir(work_dir)
                else "holds no checkpoint (the run stopped before its first one?)" if run_entries(work_dir)
                else "is empty")
        raise WorkDirError(f"train.resume=auto: work dir {work_dir} {what}; no {CHECKPOINT_NAME} to resume from. "
                           "Start a fresh run without --resume (with --overwrite if the folder holds files)")
    return path


def check_work_dir_path(work_dir: str) -> None:
    """``WorkDirError`` when ``work_dir`` or one of its parents is a file."""
    path = os.path.abspath(work_dir)
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if os.path.exists(path) and not os.path.isdir(path):
        where = "is a file" if path == os.path.abspath(work_dir) else f"is inside {path}, which is a file"
        raise WorkDirError(f"work dir {work_dir} {where}; expected a folder")


def _refuse_non_empty(cfg: Config, existing: List[str]) -> None:
    if existing and not cfg.train.overwrite:
        shown = ", ".join(existing[:6]) + (", ..." if len(existing) > 6 else "")
        raise WorkDirError(f"work dir {cfg.train.work_dir} is not empty ({shown}); resume that run with --resume "
                           "auto, replace it with --overwrite, or choose another --work-dir")


def check_start(cfg: Config) -> None:
    """The checks of :func:`prepare_work_dir` that take no lock and change nothing (a launcher runs
    them once before it starts its workers): the work dir is a folder, ``--resume`` finds a checkpoint,
    a fresh run's folder is empty or ``--overwrite`` is given."""
    check_work_dir_path(cfg.train.work_dir)
    if _resume_path(cfg) is None and os.path.isdir(cfg.train.work_dir):
        _refuse_non_empty(cfg, run_entries(cfg.train.work_dir))


def prepare_work_dir(cfg: Config, lock: WorkDirLock, load: bool = True) -> RunStart:
    """Take the lock, clean temporary files and decide fresh or resumed (see the module docstring).

    Call on the main process only; ``load=False`` skips reading the checkpoint (the caller does).
    """
    from segattn.engine.checkpoint import check_resumable, load_checkpoint

    work_dir = cfg.train.work_dir
    check_work_dir_path(work_dir)
    path = _resume_path(cfg)  # before anything is created: resuming nothing is an error
    ckpt = load_checkpoint(path) if load and path is not None else None  # so is a damaged checkpoint
    if ckpt is not None:
        check_resumable(ckpt, path)
    try:
        os.makedirs(work_dir, exist_ok=True)
    except OSError as exc:
        raise WorkDirError(f"work dir {work_dir} cannot be created: {exc.strerror or exc}") from None
    lock.acquire()
    start = RunStart()
    if lock.stale is not None:
        start.notes.append(f"removed a stale lock (pid {lock.stale.get('pid', '?')} is not running)")
    removed = clean_temp_files(work_dir)
    if removed:
        start.notes.append(f"removed {len(removed)} temporary file(s) left by an interrupted save: {', '.join(removed)}")
    if path is None:
        existing = run_entries(work_dir)
        _refuse_non_empty(cfg, existing)
        if existing:
            gone = clear_run(work_dir)
            start.notes.append(f"--overwrite: removed the earlier run's {', '.join(gone) or 'nothing'}")
        return start
    start.resume_path = path
    stored = stored_config(work_dir) if cfg.train.resume == "auto" else None
    if stored is None and ckpt is not None:
        stored = ckpt.get("config")
    if isinstance(stored, dict):
        changes = config_changes(stored, cfg)
        if changes and not cfg.train.allow_config_change:
            raise WorkDirError(
                f"resuming {path} with a config that differs from the stored one: {'; '.join(changes)}. "
                f"Resume with the stored config (`segattn train --work-dir {work_dir} --resume auto`, no --config), "
                "or accept the changes with --allow-config-change (train.allow_config_change=true)")
        if changes:
            start.notes.append(f"resuming with a changed config (allowed): {'; '.join(changes)}")
    start.checkpoint = ckpt
    return start


def truncate_metrics(work_dir: str, iteration: int) -> int:
    """Drop ``metrics.jsonl`` records after ``iteration`` (written after the checkpoint a resume starts
    from: the resumed run writes them again); returns how many were dropped."""
    from segattn.io import atomic_write_text

    path = os.path.join(work_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return 0
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by a kill
        if not isinstance(record, dict) or int(record.get("iter", 0)) <= iteration:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(kept))
    return len(lines) - len(kept)


# ---------------------------------------------------------------------------------- command line
def train_config(config: Optional[str], overrides: List[str], work_dir: Optional[str] = None,
                 resume: Optional[str] = None, overwrite: bool = False, allow_config_change: bool = False,
                 init: Optional[str] = None) -> Config:
    """The config of ``segattn train``: ``config`` (a file or shipped name) with ``overrides``, or, when
    resuming without ``config``, the run's stored config. The flags are set as given (not parsed);
    ``init`` (``--init FOLDER``) is the ``model.init`` folder (:mod:`segattn.engine.finetune`)."""
    from segattn.engine.config import apply_overrides, load_config_dict, with_init

    given = {item.split("=", 1)[0].strip(): item for item in overrides}
    for flag, value, key in (("--work-dir", work_dir, "train.work_dir"), ("--resume", resume, "train.resume"),
                             ("--init", init, "model.init")):
        if value and key in given:  # the flag won for some uses and the override for others, silently
            raise WorkDirError(f"{flag} {value} and --set {given[key]} set the same key {key}; give one of them")
    if config is None:
        if not resume:
            raise WorkDirError("--config is required (or --resume auto --work-dir DIR to continue a run "
                               "with its stored config)")
        if init:
            raise WorkDirError(f"--init {init} starts a fresh run; resuming continues the stored one (drop --init)")
        data, source = resume_config_dict(resume, work_dir), f"the stored config of {work_dir or resume}"
        data = apply_overrides(data, overrides)  # a stored config already holds its init folder's settings
    else:
        data, source = load_config_dict(config), config
        data = with_init(data, overrides, init)  # file < model.init folder < overrides
    train = data.setdefault("train", {})
    if not isinstance(train, dict):
        raise ConfigError(f"{source}: config section train: got {train!r}, expected a mapping")
    if work_dir:
        train["work_dir"] = work_dir
    if resume:
        train["resume"] = resume
        train["overwrite"] = overwrite  # a stored run that once started with --overwrite resumes fine
    elif overwrite:
        train["overwrite"] = True
    if allow_config_change:
        train["allow_config_change"] = True
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def resume_hint(cfg: Config, config: Optional[str], overrides: List[str], allow_config_change: bool = False) -> str:
    """Commands that continue ``cfg``'s run when pasted into a shell (from the same folder)."""
    import shlex

    short = ["segattn", "train", "--work-dir", cfg.train.work_dir, "--resume", "auto"]
    text = f"resume with: {shlex.join(short)}"
    if config is not None:
        full = ["segattn", "train", "--config", config, "--work-dir", cfg.train.work_dir]
        for item in overrides:
            if item.split("=", 1)[0].strip() not in ("train.work_dir", "train.resume"):  # the flags below say them
                full += ["--set", item]
        full += ["--resume", "auto"] + (["--allow-config-change"] if allow_config_change else [])
        text += f"  (or, the same: {shlex.join(full)})"
    return text
