"""Iteration-based training loop, single process or under ``torchrun`` with DistributedDataParallel.

One step: forward in train mode (a dict of outputs, or a tensor treated as ``{"out": ...}``) under
optional autocast -> ``loss = sum_k model.loss_weights[k] * criterion(out[k], target)`` -> backward
(GradScaler for fp16 on CUDA) -> optional gradient clipping -> optimiser step -> per-iteration LR
step -> ``call_step_hooks(model)`` (EMA bases and other post-step updates).

Reproducibility and resume. The sampler permutation depends on (seed, epoch); every sample's
augmentation is seeded from (seed, epoch, index) (:class:`segattn.engine.distributed.SeededDataset`);
loaders use their own generators, so the global RNG streams (dropout, ...) are touched only by the
model. A checkpoint stores model, optimiser, scheduler, scaler, iteration, best metric and all RNG
states; resuming re-enters the epoch at the exact sample, so an interrupted-and-resumed run ends
with the same weights as an uninterrupted one (exactly on CPU with ``deterministic: true``).

Work dir (:mod:`segattn.engine.workdir`). Before any data or model is built the config is checked,
the work dir locked (one run per folder), temporary files of a killed save removed, and the start
decided: fresh (the folder must be empty, or ``train.overwrite``) or resumed (``train.resume``: the
config must match the stored one unless ``train.allow_config_change``). The effective config is
stored as ``<work_dir>/config.json``; every start prints which it is and from which iteration.

Divergence. A non-finite loss stops the run with :class:`TrainingDiverged` before its gradients
touch the weights (exit code 2 from the CLI). Only with an fp16 GradScaler (CUDA AMP), which skips
the steps whose gradients overflow, up to ``train.nonfinite_tolerance`` consecutive non-finite
losses are let through. A checkpoint whose weights are not all finite is never written.

Labels with nothing to learn. A batch whose label pixels are all ``ignore_index`` gives a loss of 0
and no gradient. :data:`VOID_WINDOW` such batches in a row (or a whole epoch, or a whole run, if
shorter) stop the run with :class:`NoLabelledPixels`: the labels are void or the dataset's
``ignore_index`` is wrong, and going on would end with loss 0 and mIoU NaN.

Interrupts. SIGINT/SIGTERM set a flag; the loop finishes the current step, saves ``last.pt`` and
returns with ``interrupted=True`` (a second SIGINT aborts at once). Under torchrun the flag is
all-reduced every step so all ranks stop at the same iteration.

Distributed. Each rank draws ``batch_size`` samples (global batch = world x batch_size); DDP
averages gradients. BatchNorm statistics are per rank unless SyncBN is on (``train.sync_bn``,
converted on CUDA only, since SyncBatchNorm needs CUDA). Metrics use an all-reduced confusion
matrix; only rank 0 logs and writes checkpoints.

Files: this loop; :mod:`segattn.engine.train_checkpoints` (checkpoints, resume, the weights a fresh
run starts from); :mod:`segattn.engine.train_guards` (divergence, void labels, interrupts);
:mod:`segattn.engine.logger` (metrics.jsonl, TensorBoard, progress).
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from segattn.engine import build
from segattn.engine.checkpoint import rng_state, set_rng_state
from segattn.engine.config import Config, ConfigError, save_config
from segattn.engine.distributed import (
    DistInfo,
    ResumableSampler,
    SeededDataset,
    ShardSampler,
    cleanup,
    init_distributed,
)
from segattn.engine.evaluate import evaluate
from segattn.engine.logger import RunLogger
from segattn.engine.metrics import format_metrics, json_safe
from segattn.engine.train_checkpoints import CheckpointMixin, TrainingDiverged, finetune_from
from segattn.engine.train_guards import VOID_WINDOW, GuardMixin, NoLabelledPixels, _StopFlag
from segattn.engine.workdir import (
    RunStart,
    WorkDirLock,
    missing_dirs,
    prepare_work_dir,
    remove_empty_dirs,
    truncate_metrics,
)
from segattn.io import atomic_write_json
from segattn.lowrank.hooks import call_step_hooks

Callback = Callable[["Trainer", int], None]
__all__ = ["Trainer", "train", "TrainingDiverged", "NoLabelledPixels", "VOID_WINDOW", "finetune_from",
           "seed_everything", "set_deterministic", "dataset_meta"]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(on: bool) -> None:
    """Deterministic kernels (warn-only where none exists) or cuDNN autotuning."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on


def dataset_meta(ds: Any) -> Dict[str, Any]:
    """``num_classes``, ``ignore_index``, ``classes`` and ``palette`` of a dataset (with fallbacks)."""
    k = int(ds.num_classes)
    return {
        "num_classes": k,
        "ignore_index": int(getattr(ds, "ignore_index", 255)),
        "classes": list(getattr(ds, "classes", [str(i) for i in range(k)])),
        "palette": [list(c) for c in getattr(ds, "palette", [])] or None,
    }



class Trainer(CheckpointMixin, GuardMixin):
    """Holds one run. ``Trainer(cfg).fit()`` trains; objects may be injected (tests, notebooks)."""

    def __init__(self, cfg: Config, model: Optional[nn.Module] = None, train_set: Any = None,
                 val_set: Any = None, callbacks: Sequence[Callback] = ()) -> None:
        self.cfg = cfg
        self._model_in = model
        self._train_in = train_set
        self._val_in = val_set
        self.callbacks: List[Callback] = list(callbacks)
        self.iteration = 0
        self.nonfinite = 0  # consecutive non-finite losses
        self.void_batches = 0  # consecutive batches without a labelled pixel
        self._start_iter = 0
        self._resuming = False
        self.best: Optional[float] = None
        self.stop = _StopFlag()
        self.info = DistInfo()
        self.loss_kinds: Dict[str, str] = {}  # outputs that are not maps -> loss kind (set from the model)

    # -------------------------------------------------------------------------------- setup
    def _setup(self) -> None:
        cfg = self.cfg
        self.device = self.info.device
        set_deterministic(cfg.train.deterministic)
        seed_everything(cfg.train.seed)
        if self._train_in is None:
            self.train_set, self.val_set = build.build_datasets(cfg)
        else:
            self.train_set, self.val_set = self._train_in, self._val_in
        self.meta = dataset_meta(self.train_set)
        class_weight = self._class_weight()  # a wrong length fails here, before the model is built
        model = self._model_in if self._model_in is not None else build.build_model(cfg.model, self.meta["num_classes"])
        if self._model_in is None and not self._resuming:
            note = self.initial_weights(model)
            if note and self.info.is_main:
                print(note, file=sys.stderr, flush=True)
        model.to(self.device)
        if cfg.train.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.info.distributed and cfg.train.sync_bn and self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        seed_everything(cfg.train.seed + self.info.rank)  # per-rank streams for dropout etc.
        self.criterion = build.build_criterion(cfg.loss, self.meta["ignore_index"], class_weight)
        self.optimizer = build.build_optimizer(model, cfg.optim)
        self.scheduler = build.build_scheduler(self.optimizer, cfg.schedule, cfg.optim.lr)
        use_scaler = self.amp == torch.float16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        if self.info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp: nn.Module = nn.parallel.DistributedDataParallel(
                model, device_ids=ids, find_unused_parameters=cfg.train.find_unused_parameters)
        else:
            self.ddp = model
        self.loss_weights: Dict[str, float] = dict(getattr(model, "loss_weights", None) or {"out": 1.0})
        self.loss_kinds = dict(getattr(model, "loss_kinds", None) or {})
        self._build_loaders()

    def _class_weight(self) -> Optional[List[float]]:
        cw = self.cfg.loss.class_weight
        if cw is None or isinstance(cw, (list, tuple)):
            return build.resolve_class_weight(self.cfg.loss, None, self.meta["num_classes"], self.meta["ignore_index"])
        raw = self.train_set
        if self._train_in is None:
            from segattn.data import build_dataset

            d = self.cfg.data
            raw = build_dataset(d.dataset, root=d.root, split=d.train_split, transform=None,
                                **{**d.dataset_kwargs, **d.train_kwargs})
        weights = build.resolve_class_weight(self.cfg.loss, raw, self.meta["num_classes"], self.meta["ignore_index"])
        return weights

    def _build_loaders(self) -> None:
        cfg, info = self.cfg, self.info
        bs = cfg.data.batch_size
        self.sampler = ResumableSampler(self.train_set, info.world_size, info.rank, shuffle=True,
                                        seed=cfg.train.seed, drop_last=True)
        self.iters_per_epoch = self.sampler.num_samples // bs
        if self.iters_per_epoch < 1:
            raise ValueError(f"dataset of {len(self.train_set)} samples is too small for batch {bs} x {info.world_size} ranks")
        pin = self.device.type == "cuda"
        workers = cfg.data.num_workers
        self.train_loader = DataLoader(SeededDataset(self.train_set), batch_size=bs, sampler=self.sampler,
                                       num_workers=workers, drop_last=True, pin_memory=pin,
                                       generator=torch.Generator().manual_seed(cfg.train.seed))
        self.val_loader = None
        if self.val_set is not None:
            shard = ShardSampler(len(self.val_set), info.world_size, info.rank)
            self.val_loader = DataLoader(self.val_set, batch_size=cfg.data.val_batch_size, sampler=shard,
                                         num_workers=workers, pin_memory=pin,
                                         generator=torch.Generator().manual_seed(0))

    # -------------------------------------------------------------------------------- step
    def _autocast(self) -> Any:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp)

    def compute_loss(self, outputs: Any, target: Tensor) -> Dict[str, Tensor]:
        """Weighted sum over supervised outputs; returns ``{"loss": total, "loss_<k>": term}``."""
        if isinstance(outputs, Tensor):
            outputs = {"out": outputs}
        terms: Dict[str, Tensor] = {}
        total: Optional[Tensor] = None
        for key, logits in outputs.items():
            w = float(self.loss_weights.get(key, 1.0))
            if w == 0.0:
                continue
            kind = self.loss_kinds.get(key)  # EncNet's "se": class-presence logits, not a map
            if kind is None:
                term = self.criterion(logits.float(), target)
            else:
                from segattn.models.losses import output_loss

                term = output_loss(kind, logits.float(), target, self.criterion, self.meta["ignore_index"])
            terms[f"loss_{key}"] = term.detach()
            total = w * term if total is None else total + w * term
        if total is None:
            raise ValueError(f"no supervised output among {list(outputs)} (loss_weights {self.loss_weights})")
        terms["loss"] = total
        return terms

    def train_step(self, images: Tensor, masks: Tensor) -> Dict[str, Tensor]:
        images = images.to(self.device, non_blocking=True)
        masks = masks.to(self.device, non_blocking=True).long()
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        self._check_labelled(masks)
        self.ddp.train()
        with self._autocast():
            outputs = self.ddp(images)
        terms = self.compute_loss(outputs, masks)
        self._check_finite(terms)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["loss"]).backward()
        if self.cfg.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        call_step_hooks(build.unwrap(self.model))
        return {k: v.detach() for k, v in terms.items()}

    # ---------------------------------------------------------------------------- evaluate
    def validate(self) -> Optional[Dict[str, Any]]:
        if self.val_loader is None:
            return None
        e = self.cfg.eval
        return evaluate(build.unwrap(self.model), self.val_loader, self.meta["num_classes"], self.meta["ignore_index"],
                        self.meta["classes"], self.device, e.mode, e.crop_size, e.stride, e.scales, e.flip,
                        e.max_samples, self.amp, show_progress=self.cfg.train.progress)

    def _evaluate_and_keep_best(self, log: RunLogger) -> Optional[Dict[str, Any]]:
        saved = rng_state()
        metrics = self.validate()
        set_rng_state(saved)
        if metrics is None:
            return None
        log.log("val", self.iteration, {k: v for k, v in metrics.items()})
        log.info(f"iter {self.iteration}: mIoU {100 * metrics['mIoU']:.2f}  aAcc {100 * metrics['aAcc']:.2f}")
        miou = metrics["mIoU"]
        if isinstance(miou, float) and miou == miou and (self.best is None or miou > self.best):
            self.best = float(miou)
            self.save("best.pt")
        return metrics

    # --------------------------------------------------------------------------------- fit
    def fit(self) -> Dict[str, Any]:
        """Train to ``schedule.iters`` (or until interrupted); returns a summary dict."""
        cfg = self.cfg.validate()
        if cfg.train.threads:
            _warn_oversubscribed(int(cfg.train.threads))
            torch.set_num_threads(int(cfg.train.threads))
        _warn_warmup(cfg.schedule.warmup_iters, cfg.schedule.iters)
        self._check_names()
        self.info = init_distributed(cfg.train.device)  # an unavailable device fails here, before any work
        self.amp = build.amp_dtype(cfg.train.amp, cfg.train.amp_dtype, self.info.device)  # so does fp16 off CUDA
        created = missing_dirs(cfg.train.work_dir)  # removed again if the run fails before writing into them
        lock = WorkDirLock(cfg.train.work_dir)
        log: Optional[RunLogger] = None
        failed = True
        try:
            start = self._prepare(lock)
            self._resuming = bool(start.resume_path)
            self._setup()
            if start.resume_path:
                self.resume(start.resume_path, start.checkpoint)
                start.checkpoint = None
            if self.info.is_main:
                save_config(cfg, os.path.join(cfg.train.work_dir, "config.json"))
                if start.resume_path:
                    truncate_metrics(cfg.train.work_dir, self.iteration)
            log = RunLogger(cfg.train.work_dir, cfg.schedule.iters, self.iteration, enabled=self.info.is_main,
                            tensorboard=cfg.train.tensorboard, progress=cfg.train.progress)
            with self.stop:
                summary = self._loop(log)
            failed = False
            return summary
        except TrainingDiverged as exc:
            if log is not None:
                log.log("error", self.iteration, {"error": "diverged", "message": str(exc)})
            raise
        finally:
            if log is not None:
                log.close()
            lock.release()
            if failed and self.info.is_main:
                remove_empty_dirs(created)  # e.g. a missing dataset: no empty work dir left behind
            cleanup(self.info)

    def _check_names(self) -> None:
        """``model.name`` and ``data.dataset`` are registered (unless the objects were passed in)."""
        import difflib

        checks = []
        if self._model_in is None:
            from segattn.models import list_models

            checks.append(("model.name", self.cfg.model.name, list_models()))
        if self._train_in is None:
            from segattn.data import list_datasets

            checks.append(("data.dataset", self.cfg.data.dataset, list_datasets()))
        for key, name, known in checks:
            if name not in known:
                hint = difflib.get_close_matches(name, known, n=1)
                did = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(f"config key {key}: got {name!r}{did}, expected one of {', '.join(known)}")
        self._check_keywords()

    def _check_keywords(self) -> None:
        """The names in ``model.kwargs`` and the dataset keywords are taken (before the work dir is touched)."""
        from segattn.errors import SegattnError
        from segattn.registry import DATASETS, check_kwargs

        data = self.cfg.data
        if self._model_in is None:
            from segattn.models.factory import check_model_keywords

            try:
                check_model_keywords(self.cfg.model.name, dict(self.cfg.model.kwargs))
            except SegattnError as exc:
                raise ConfigError(f"config key model.kwargs: {exc}") from None
        if self._train_in is None:
            parts = [("train_kwargs", data.train_kwargs)] + ([("val_kwargs", data.val_kwargs)] if data.val_split else [])
            for part, extra in parts:
                check_kwargs(DATASETS.get(data.dataset), {**data.dataset_kwargs, **extra},
                             f"dataset {data.dataset!r} (config keys data.dataset_kwargs + data.{part})")

    def _prepare(self, lock: WorkDirLock) -> RunStart:
        """:func:`prepare_work_dir` on rank 0 (its error, if any, raised on every rank); prints the start."""
        cfg, info = self.cfg, self.info
        start, error = RunStart(), None
        if info.is_main:
            try:
                start = prepare_work_dir(cfg, lock)
            except Exception as exc:  # shared with the other ranks below, then raised
                error = exc
        if info.distributed:
            shared = [None if error is None else f"{type(error).__name__}: {error}", start.resume_path]
            dist.broadcast_object_list(shared, src=0)
            if shared[0] is not None and error is None:
                raise RuntimeError(f"rank 0 could not prepare the work dir: {shared[0]}")
            start.resume_path = shared[1]
        if error is not None:
            raise error
        if info.is_main:
            for note in start.notes:
                print(f"{cfg.train.work_dir}: {note}", file=sys.stderr, flush=True)
            if start.resume_path:
                done = int(start.checkpoint["iteration"]) if start.checkpoint else "?"
                print(f"resuming {start.resume_path} at iteration {done} of {cfg.schedule.iters} "
                      f"(work dir {cfg.train.work_dir})", file=sys.stderr, flush=True)
            else:
                print(f"fresh run: iteration 0 of {cfg.schedule.iters} in {cfg.train.work_dir}",
                      file=sys.stderr, flush=True)
        return start

    def _loop(self, log: RunLogger) -> Dict[str, Any]:
        cfg = self.cfg
        total, bs = cfg.schedule.iters, cfg.data.batch_size
        epoch, offset = divmod(self.iteration, self.iters_per_epoch)
        self.sampler.set_epoch(epoch, skip=offset * bs)
        data = iter(self.train_loader)
        start_iter, t0 = self.iteration, time.time()
        self._start_iter = start_iter
        running: Dict[str, float] = {}
        n_running = 0
        metrics = None
        interrupted = False
        while self.iteration < total:
            if self._stop_requested():
                interrupted = True
                break
            try:
                images, masks = next(data)
            except StopIteration:
                epoch += 1
                self.sampler.set_epoch(epoch)
                data = iter(self.train_loader)
                continue
            terms = self.train_step(images, masks)
            self.iteration += 1
            for k, v in terms.items():
                running[k] = running.get(k, 0.0) + float(v)
            n_running += 1
            it = self.iteration
            if it % max(1, cfg.train.log_interval) == 0 or it == total:
                values = {k: v / n_running for k, v in running.items()}
                values["lr"] = self.optimizer.param_groups[0]["lr"]
                values["it_per_s"] = (it - start_iter) / max(1e-9, time.time() - t0)
                log.log("train", it, values)
                log.advance(it, {"loss": values["loss"], "lr": values["lr"]})
                running, n_running = {}, 0
            for cb in self.callbacks:
                cb(self, it)
            if cfg.train.eval_interval and it % cfg.train.eval_interval == 0 and it < total:
                metrics = self._evaluate_and_keep_best(log)
            if cfg.train.ckpt_interval and it % cfg.train.ckpt_interval == 0 and it < total:
                self.save("last.pt")
        wall = time.time() - t0
        if interrupted:
            ckpt = self.save("last.pt")
            log.info(f"interrupted at iteration {self.iteration}; checkpoint {ckpt}; resume with: "
                     f"segattn train --work-dir {shlex.quote(cfg.train.work_dir)} --resume auto")
        else:
            metrics = self._evaluate_and_keep_best(log) if self.val_loader is not None else None
            ckpt = self.save("last.pt")
            if metrics is not None:
                log.info(format_metrics(metrics))
        summary = {
            "iteration": self.iteration,
            "interrupted": interrupted,
            "metrics": metrics,
            "best_mIoU": self.best,
            "work_dir": cfg.train.work_dir,
            "checkpoint": ckpt,
            "wall_time_s": round(wall, 2),
            "it_per_s": round((self.iteration - start_iter) / max(1e-9, wall), 4),
            "world_size": self.info.world_size,
        }
        if self.info.is_main:
            atomic_write_json(os.path.join(cfg.train.work_dir, "summary.json"), json_safe(summary))
        return summary


def _warn_oversubscribed(threads: int) -> None:
    """A warning (not an error: a config written for another machine still runs) when ``threads``
    exceeds this machine's CPUs, where the extra threads only slow the run down."""
    cpus = os.cpu_count() or 1
    if threads > cpus:
        warnings.warn(f"train.threads={threads} is more than the {cpus} CPU(s) here; threads beyond the CPU count "
                      f"slow the run down (--set train.threads={cpus}, or --threads for demo / compare)", stacklevel=3)


def _warn_warmup(warmup_iters: int, iters: int) -> None:
    """A warning when the linear warmup lasts the whole run (the LR never reaches ``optim.lr``): legal
    for a smoke test that shortens ``schedule.iters``, rarely what a real run means."""
    if warmup_iters >= iters:
        warnings.warn(f"schedule.warmup_iters={warmup_iters} is not below schedule.iters={iters}: the whole run is "
                      f"warmup and the LR never reaches optim.lr (--set schedule.warmup_iters=N with N < {iters})",
                      stacklevel=3)


def train(cfg: Config, model: Optional[nn.Module] = None, train_set: Any = None, val_set: Any = None,
          callbacks: Sequence[Callback] = ()) -> Dict[str, Any]:
    """Train ``cfg`` (see :class:`Trainer`); returns the summary (iteration, metrics, best, paths)."""
    return Trainer(cfg, model, train_set, val_set, callbacks).fit()
