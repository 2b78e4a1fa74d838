"""SyntheticContext checks its arguments at construction."""

import pytest

from segattn.data.synthetic import SyntheticContext
from segattn.errors import ArgumentError


@pytest.mark.parametrize("kwargs,expected", [
    (dict(num_samples=-3), r"num_samples must be an int >= 1, got -3"),
    (dict(num_samples="10"), "num_samples must be an int"),
    (dict(seed=-1), "seed must be an int >= 0"),
    (dict(size=(64, "64")), "size must be a list or tuple"),
    (dict(split="dev"), "split must be one of 'train', 'val', 'test'"),
])
def test_synthetic_context_checks_its_arguments(kwargs, expected):
    with pytest.raises(ArgumentError, match=expected):
        SyntheticContext(**kwargs)
