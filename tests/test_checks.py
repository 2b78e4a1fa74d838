"""segattn.checks: one ArgumentError naming the argument, the value and what is accepted."""

from typing import Optional, Sequence, Tuple

import pytest
import torch

import segattn
from segattn.checks import POSITIVE, Range, check_bool, check_choice, check_float, check_int, checked
from segattn.errors import ArgumentError, SegattnError, error_message


def test_argument_error_is_a_segattn_value_and_type_error():
    err = ArgumentError("x")
    assert isinstance(err, SegattnError) and isinstance(err, ValueError) and isinstance(err, TypeError)
    assert error_message(err) == "x"


@pytest.mark.parametrize("value,expected", [
    ("8", r"n must be an int >= 1, got '8' \(str\)"),
    (True, r"got True \(bool\)"),
    (2.5, r"got 2.5 \(float\)"),
    (0, r"got 0 \(int\)"),
])
def test_check_int(value, expected):
    with pytest.raises(ArgumentError, match=expected):
        check_int("n", value)
    assert check_int("n", 3) == 3 and check_int("n", 0, min=0) == 0


def test_check_float_bool_choice():
    assert check_float("p", 1) == 1.0
    for bad in ("0.5", True, float("nan"), float("inf")):
        with pytest.raises(ArgumentError, match="p must be a finite number"):
            check_float("p", bad)
    with pytest.raises(ArgumentError, match=r"p must be a finite number > 0, got 0"):
        check_float("p", 0, POSITIVE)
    with pytest.raises(ArgumentError, match=r"in \[0, 1\), got 1"):
        check_float("p", 1, Range(0, 1, high_open=True))
    with pytest.raises(ArgumentError, match="flag must be True or False, got 1"):
        check_bool("flag", 1)
    with pytest.raises(ArgumentError, match="mode must be one of 'a', 'b', got 'c'"):
        check_choice("mode", "c", ("a", "b"))


@checked(rate=Range(0, 1), mode=("x", "y"))
def _f(n: int, sizes: Sequence[int] = (1,), pair: Tuple[int, int] = (1, 1), rate: float = 0.5,
       mode: str = "x", width: Optional[int] = None, t: Optional[torch.Tensor] = None) -> int:
    return n


@pytest.mark.parametrize("kwargs,expected", [
    (dict(n="3"), "_f: n must be an int >= 1"),
    (dict(n=1, sizes=[1, 0]), "sizes must be a list or tuple whose items are each an int >= 1"),
    (dict(n=1, sizes="12"), "sizes must be a list or tuple"),
    (dict(n=1, pair=(1, 2, 3)), "pair must be a tuple of 2 items"),
    (dict(n=1, rate=2.0), r"rate must be a finite number in \[0, 1\]"),
    (dict(n=1, mode="z"), "mode must be one of 'x', 'y'"),
    (dict(n=1, width=False), "width must be an int >= 1 or None"),
    (dict(n=1, t=[1.0]), "t must be a Tensor or None"),
    (dict(), "_f: missing a required argument: 'n'"),
    (dict(n=1, bogus=2), "_f: got an unexpected keyword argument 'bogus'; accepted: n, sizes, pair, rate"),
])
def test_checked_decorator(kwargs, expected):
    with pytest.raises(ArgumentError, match=expected):
        _f(**kwargs)
    assert _f(2, sizes=torch.tensor([1, 2]), width=None, t=torch.zeros(1)) == 2


def test_checked_refuses_a_limit_for_an_unknown_argument():
    with pytest.raises(TypeError, match="has no argument"):
        checked(nope=Range(0))(_f.__wrapped__)


@pytest.mark.parametrize("call,expected", [
    (lambda: segattn.list_modules(None), "pattern must be a str"),
    (lambda: segattn.list_models(3), "pattern must be a str"),
    (lambda: segattn.create_module(None, 8), "name must be a str"),
    (lambda: segattn.create_module("nonloca", 8), "did you mean 'nonlocal'"),
    (lambda: segattn.create_module("nonlocal", 8, reductoin=2), "did you mean 'reduction'"),
    (lambda: segattn.create_model("fcn", True), r"num_classes must be an int >= 1, got True"),
    (lambda: segattn.create_model("fcn", 3, backbone="resnet18", dropout=1.5), r"dropout must be .* in \[0, 1\)"),
    (lambda: segattn.create_model("fcn", 3, backbone="resnet18", channels="64"), "channels must be an int"),
    (lambda: segattn.create_upsampler("carafe", 16, scale_factor=-2), "scale_factor must be an int >= 1"),
    (lambda: segattn.from_pretrained(3), "source must be a str or a PathLike, got 3"),
    (lambda: segattn.module_info(None), "name must be a str"),
])
def test_public_functions_raise_argument_error(call, expected):
    with pytest.raises(ArgumentError, match=expected):
        call()
