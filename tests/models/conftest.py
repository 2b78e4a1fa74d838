"""Model tests run single-threaded: on the shared 1-2 core CI machines a second intra-op thread only
spins and doubles the CPU time of these small convolutions."""

from __future__ import annotations

from typing import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
