"""The trainer's checkpoints: what a checkpoint holds, writing it (never with non-finite weights), resuming
from it, and the weights a fresh run starts from (the ``model.init`` folder, or a ``model.pretrained``
training checkpoint).

:class:`CheckpointMixin` is part of :class:`segattn.engine.train.Trainer`; the file format is
:mod:`segattn.engine.checkpoint`.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn

from segattn.engine import build
from segattn.engine.checkpoint import (
    atomic_save,
    check_resumable,
    load_checkpoint,
    rng_state,
    set_rng_state,
    to_plain,
)
from segattn.engine.config_checks import ConfigError
from segattn.engine.distributed import barrier
from segattn.errors import one_line
from segattn.models.folder import read_pretrained_config
from segattn.models.transfer import InitError, init_from_folder


class TrainingDiverged(ValueError):
    """The loss (or the weights) stopped being finite; the message says where and what to try."""


def finetune_from(model: nn.Module, source: str) -> Optional[str]:
    """Load a segattn training checkpoint ``source`` (``model.pretrained``) into ``model`` for fine-tuning.

    Every tensor whose name and shape match is loaded, the head included; a classifier trained for
    another number of classes keeps its fresh initialisation. Returns a one-line summary, or
    ``None`` when ``source`` is not a training checkpoint (backbone weights, which the backbone has
    loaded already). ``ValueError`` when no tensor fits (another architecture).
    """
    if not isinstance(source, str) or not os.path.isfile(source):
        return None
    ckpt = load_checkpoint(source)
    if not (isinstance(ckpt.get("model"), dict) and isinstance(ckpt.get("config"), dict)):
        return None
    own = model.state_dict()
    theirs = {k: v for k, v in ckpt["model"].items() if torch.is_tensor(v)}
    usable = {k: v for k, v in theirs.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not usable:
        name = ckpt["config"].get("model", {}).get("name", "?")
        raise ValueError(f"model.pretrained {source} is a segattn checkpoint of model {name!r}; "
                         "none of its tensors fits this model (names or shapes differ)")
    model.load_state_dict(usable, strict=False)
    other_shape = sorted(k for k in theirs if k in own and k not in usable)
    text = f"fine-tuning from {source}: loaded {len(usable)} of {len(own)} tensors"
    if other_shape:
        text += f"; kept fresh (other shape, e.g. another class count): {', '.join(other_shape[:4])}"
        text += " ..." if len(other_shape) > 4 else ""
    return text



class CheckpointMixin:
    """Checkpoint methods of the trainer (uses its ``model``, ``optimizer``, ``scheduler``, ``scaler``,
    ``cfg``, ``info``, ``iteration``, ``best`` and ``meta``)."""

    def initial_weights(self, model: nn.Module) -> Optional[str]:
        """Load what a fresh run starts from: the ``model.init`` folder (every layer; the class-count-shaped
        ones fresh when the count differs) or a ``model.pretrained`` training checkpoint. Returns the
        text to print (the init table), or ``None``."""
        cfg = self.cfg  # type: ignore[attr-defined]
        if cfg.model.init:
            held = _folder_model_name(cfg.model.init)
            if held != cfg.model.name:  # a Config built in Python without the folder's settings
                raise ConfigError(f"config key model.init: {cfg.model.init} holds a {held!r} model but model.name is "
                                  f"{cfg.model.name!r}; read the config with segattn.engine.config.load_config or "
                                  "with_init (the CLI: segattn train --init), which take the architecture from the folder")
            return init_from_folder(model, cfg.model.init).table()
        if cfg.model.pretrained:
            return finetune_from(model, cfg.model.pretrained)
        return None

    def checkpoint_state(self, rng_ranks: Optional[List[Any]] = None) -> Dict[str, Any]:
        model = build.unwrap(self.model)
        return {
            "rng_ranks": rng_ranks,
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "best": self.best,
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
            "model_config": self._model_config(model),
            "meta": self.meta,
        }

    def nonfinite_weights(self) -> List[str]:
        """Names of the model's parameters and float buffers holding NaN or inf (at most 5)."""
        bad = []
        for key, value in build.unwrap(self.model).state_dict().items():
            if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(key)
                if len(bad) == 5:
                    break
        return bad

    def _model_config(self, model: nn.Module) -> Any:
        """``model.config`` as plain data, or ``None`` (with a warning, once) when it holds other objects."""
        try:
            return to_plain(getattr(model, "config", None), "model.config")
        except TypeError as exc:
            if not getattr(self, "_warned_model_config", False):
                warnings.warn(f"checkpoints store no model_config: {exc}", stacklevel=2)
                self._warned_model_config = True
            return None

    def save(self, name: str) -> Optional[str]:
        """Write ``<work_dir>/<name>`` on rank 0; every rank waits for it. Weights that are not all
        finite are never written (:class:`TrainingDiverged`): the previous file stays."""
        path = os.path.join(self.cfg.train.work_dir, name)
        bad = self.nonfinite_weights()
        if bad:
            raise TrainingDiverged(f"the weights hold NaN/inf at iteration {self.iteration} ({', '.join(bad)}); "
                                   f"{name} was not written. {self._divergence_hint()}")
        rng_ranks = None
        if self.info.distributed:  # every rank's RNG streams, so a resumed run continues each of them
            rng_ranks = [None] * self.info.world_size
            dist.all_gather_object(rng_ranks, rng_state())
        if self.info.is_main:
            atomic_save(self.checkpoint_state(rng_ranks), path)
        barrier()
        return path

    def resume(self, path: str, ckpt: Optional[Dict[str, Any]] = None) -> None:
        """Restore model, optimiser, scheduler, scaler, iteration, best metric and RNG streams."""
        from segattn.engine.run import load_weights

        ckpt = load_checkpoint(path, map_location="cpu") if ckpt is None else ckpt
        check_resumable(ckpt, path)
        load_weights(build.unwrap(self.model), ckpt, path)
        for key in ("optimizer", "scheduler", "scaler"):
            self._restore(path, key, lambda k=key: getattr(self, k).load_state_dict(ckpt[k]))
        self.iteration = int(ckpt["iteration"])
        self.best = ckpt.get("best")
        ranks = ckpt.get("rng_ranks")
        if ranks and len(ranks) == self.info.world_size:
            self._restore(path, "rng_ranks", lambda: set_rng_state(ranks[self.info.rank]))
        else:
            self._restore(path, "rng", lambda: set_rng_state(ckpt["rng"]))
            if self.info.distributed:  # world size changed: keep the ranks' streams distinct
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,))) + self.info.rank)

    @staticmethod
    def _restore(path: str, key: str, load: Callable[[], Any]) -> None:
        """Run ``load``; any failure is one ``ValueError`` naming the checkpoint and its key."""
        try:
            load()
        except Exception as exc:  # a state of another optimiser, a damaged RNG state, ...
            reason = one_line(str(exc), 300) or type(exc).__name__
            raise ValueError(f"checkpoint {path}: its {key!r} state does not fit this run ({reason}); "
                             "was it written with another optim / schedule / amp config?") from None


    def _divergence_hint(self) -> str:
        last = os.path.join(self.cfg.train.work_dir, "last.pt")
        kept = f"the last good checkpoint is {last}" if os.path.isfile(last) else "no checkpoint was written"
        return (f"{kept}. Try a lower optim.lr (now {self.cfg.optim.lr:g}), train.grad_clip, or check the data "
                "for NaN/inf values")


def _folder_model_name(folder: str) -> str:
    try:
        return str(read_pretrained_config(folder)["name"])
    except (OSError, ValueError) as exc:
        raise InitError(f"cannot initialise from {folder}: {exc}") from None
