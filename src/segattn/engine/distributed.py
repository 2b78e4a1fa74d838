"""torch.distributed glue for ``torchrun``: process-group setup, samplers, rank-0 helpers.

``torchrun --nproc_per_node N -m segattn train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and starts a process group
(NCCL on CUDA, gloo on CPU). Without those variables everything runs as a single process.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler


@dataclass
class DistInfo:
    """Where this process sits: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` is ``cuda:<local_rank>`` when CUDA is available, else CPU; an unknown or unavailable
    device raises :class:`segattn.errors.SegattnError` saying which devices there are."""
    from segattn.errors import SegattnError

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SegattnError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise SegattnError(f"device {name!r} is not available: {why}; use cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise SegattnError(f"device {str(device)!r} is not available: {torch.cuda.device_count()} CUDA GPU(s) visible")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise SegattnError(f"device {name!r} is not available: no Apple MPS device; use cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        backend = getattr(torch, device.type, None)
        if backend is None or not getattr(backend, "is_available", lambda: False)():
            raise SegattnError(f"device {name!r} is not available here; expected auto, cpu or cuda")
    return device


def init_distributed(device: str = "auto", backend: Optional[str] = None) -> DistInfo:
    """Join the process group torchrun describes in the environment (or return a single-process info)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world <= 1:
        return DistInfo(rank, 1, local, dev)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, dev)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistInfo(rank, world, local, dev, initialised_here=True)


def cleanup(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: object, src: int = 0) -> object:
    """``obj`` from rank ``src`` on every rank (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over processes (a copy; identity when not distributed)."""
    t = t.detach().clone()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed that depends only on (run seed, epoch, dataset index)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can start mid-epoch and tags each index with a per-sample seed.

    It yields ``(index, seed)`` pairs (see :class:`SeededDataset`). The permutation depends only on
    ``(seed, epoch)``, so rank ``r`` of ``W`` gets ``perm[r::W]``; with batch ``b`` per rank, global
    batch ``i`` is ``perm[i*W*b:(i+1)*W*b]`` whatever ``W`` is, which lets a multi-process run match a
    single process on the same global batch. ``skip`` drops the first ``skip`` samples of this rank's
    epoch (used by resume).
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[Tuple[int, int]]:  # type: ignore[override]
        indices: List[int] = list(super().__iter__())
        for i in indices[self.skip:]:
            yield i, sample_seed(self.seed, self.epoch, i)

    def __len__(self) -> int:
        return self.num_samples - self.skip


class ShardSampler(Sampler):
    """Evaluation split: rank ``r`` takes ``range(r, n, W)``, no padding, so no sample is counted twice."""

    def __init__(self, n: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.n, self.world, self.rank = n, num_replicas, rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return max(0, math.ceil((self.n - self.rank) / self.world))


class SeededDataset(Dataset):
    """Wraps a dataset so ``ds[(index, seed)]`` runs its random transforms from ``seed``.

    Python's ``random``, NumPy's global generator and torch's CPU generator are seeded before the
    sample is read. In the main process (``num_workers=0``) their previous states are restored
    afterwards, so data loading never disturbs the training RNG streams. The augmentation of a sample
    therefore depends only on (run seed, epoch, index): not on workers, world size, or on resuming.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: Tuple[int, int]):  # noqa: ANN204
        import random

        import numpy as np

        index, seed = item
        in_main = torch.utils.data.get_worker_info() is None
        if in_main:
            saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)  # CPU only: CUDA streams stay untouched
        try:
            return self.dataset[index]
        finally:
            if in_main:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])

    def __getattr__(self, name: str):  # noqa: ANN204
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
