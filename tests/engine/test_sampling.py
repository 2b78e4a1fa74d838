import random

import numpy as np
import torch
from torch.utils.data import DataLoader

from segattn.engine.distributed import ResumableSampler, SeededDataset, ShardSampler
from tests.engine.standins import ToyDataset


def test_resumable_sampler_skip_and_rank_split():
    ds = list(range(20))
    full = ResumableSampler(ds, 1, 0, seed=3)
    full.set_epoch(2)
    whole = [i for i, _ in full]
    part = ResumableSampler(ds, 1, 0, seed=3)
    part.set_epoch(2, skip=8)
    assert [i for i, _ in part] == whole[8:] and len(part) == 12
    ranks = []
    for r in range(2):
        s = ResumableSampler(ds, 2, r, seed=3)
        s.set_epoch(2)
        ranks.append([i for i, _ in s])
    # global batch k of 2 ranks x batch 2 == samples 4k..4k+3 of the single-process order
    for k in range(5):
        assert sorted(ranks[0][2 * k:2 * k + 2] + ranks[1][2 * k:2 * k + 2]) == sorted(whole[4 * k:4 * k + 4])
    other = ResumableSampler(ds, 1, 0, seed=3)
    other.set_epoch(3)
    assert [i for i, _ in other] != whole


def test_shard_sampler_covers_each_index_once():
    shards = [list(ShardSampler(7, 3, r)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(7)) and [len(ShardSampler(7, 3, r)) for r in range(3)] == [3, 2, 2]


def test_seeded_augmentation_independent_of_workers_and_keeps_global_rng():
    ds = ToyDataset(8)
    sampler = ResumableSampler(ds, 1, 0, seed=1)
    sampler.set_epoch(0)
    state = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    gen = torch.Generator()  # the trainer gives loaders their own generator too
    main = [b[0] for b in DataLoader(SeededDataset(ds), batch_size=4, sampler=sampler, generator=gen)]
    assert torch.equal(torch.get_rng_state(), state[2]) and np.random.get_state()[1][0] == state[1][1][0]
    workers = [b[0] for b in DataLoader(SeededDataset(ds), batch_size=4, sampler=sampler, num_workers=2)]
    for a, b in zip(main, workers):
        assert torch.equal(a, b)
    assert SeededDataset(ds).num_classes == 3  # attributes pass through
