import os
import random

import numpy as np
import pytest
import torch

from segattn.engine.checkpoint import atomic_save, load_checkpoint, model_state, rng_state, set_rng_state


def test_rng_roundtrip():
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(1))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    path = str(tmp_path / "ck.pt")
    atomic_save({"model": {"w": torch.ones(2)}}, path)
    assert torch.equal(model_state(load_checkpoint(path))["w"], torch.ones(2))

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError):
        atomic_save({"model": {}}, path)
    assert os.listdir(tmp_path) == ["ck.pt"]  # old file intact, temporary removed
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(str(tmp_path / "nope.pt"))
