"""Export tests run single-threaded (tracing is Python-bound; a second thread only competes on CI)."""

from __future__ import annotations

import warnings
from typing import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        yield
    torch.set_num_threads(previous)
