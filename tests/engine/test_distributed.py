"""Two gloo processes on CPU agree with one process on the same global batch.

Why this can be exact: the sampler permutation depends only on (seed, epoch), rank r of W takes
perm[r::W], so global batch i is the same set of samples for W = 1 (batch 2b) and W = 2 (batch b
each); each sample's augmentation is seeded from (seed, epoch, index), not from the rank. DDP
averages the per-rank gradients, which equals the single-process gradient when (a) the model has
no cross-sample coupling (no BatchNorm: per-rank BN statistics would differ from the global batch's;
that needs SyncBN, which PyTorch supports on CUDA only) and (b) each rank's loss averages over the
same number of pixels (a dataset without ignored pixels; with ignore_index the per-rank means are
weighted differently). Only float summation order differs, hence the tolerance.
"""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from segattn.engine.train import train
from tests.engine.standins import TinySeg, ToyDataset, tiny_config

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(work_dir, batch):
    cfg = tiny_config(work_dir, data={"batch_size": batch, "val_batch_size": 3}, schedule={"iters": 5},
                      train={"threads": 1, "eval_interval": 0})
    torch.manual_seed(7)
    model = TinySeg(width=6)
    data = ToyDataset(10, with_ignore=False)
    val = ToyDataset(5, seed=3, augment=False)
    return cfg, model, data, val


def _worker(rank, world, port, work_dir, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    cfg, model, data, val = _setup(work_dir, 2)
    summary = train(cfg, model=model, train_set=data, val_set=val)
    if rank == 0:
        torch.save({"state": model.state_dict(), "summary": summary}, out)


def test_two_gloo_processes_match_single_process(tmp_path):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), out), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=False)
    assert ddp["summary"]["world_size"] == 2

    cfg, model, data, val = _setup(str(tmp_path / "single"), 4)
    single = train(cfg, model=model, train_set=data, val_set=val)
    torch.manual_seed(7)
    start = TinySeg(width=6)
    moved = False
    for name, ref in model.state_dict().items():
        torch.testing.assert_close(ddp["state"][name], ref, rtol=1e-5, atol=1e-6, msg=name)
        moved |= not torch.equal(ref, start.state_dict()[name])
    assert moved
    assert ddp["summary"]["metrics"]["pixels"] == single["metrics"]["pixels"] == 5 * 12 * 12
    assert ddp["summary"]["metrics"]["mIoU"] == pytest.approx(single["metrics"]["mIoU"], abs=1e-6)
