"""Every registered context module and upsampler rejects a wrong argument at construction with one
ArgumentError naming the argument (bool is not an int, a str is not a number, counts are >= 1)."""

from __future__ import annotations

import inspect
import typing

import pytest

import segattn
from segattn.errors import ArgumentError, SegattnError
from segattn.registry import MODULES, UPSAMPLERS

ENTRIES = [(MODULES, n) for n in MODULES] + [(UPSAMPLERS, n) for n in UPSAMPLERS]


def _params(factory, kinds):
    """Names of the keyword parameters whose hint (or Optional hint) is one of ``kinds``."""
    hints = typing.get_type_hints(factory.__init__)
    out = []
    for name in inspect.signature(factory).parameters:
        hint = hints.get(name)
        args = set(typing.get_args(hint)) - {type(None)} if typing.get_origin(hint) is typing.Union else {hint}
        if args and args <= set(kinds):
            out.append(name)
    return out


def _cases(kinds, bad_values):
    cases = []
    for registry, name in ENTRIES:
        for arg in _params(registry.get(name), kinds):
            for bad in bad_values:
                cases.append(pytest.param(registry, name, arg, bad, id=f"{name}-{arg}-{bad!r}"))
    return cases


def _build(registry, name, arg, value):
    if arg == "in_channels":
        return registry.create(name, value)
    return registry.create(name, 16, **{arg: value})


@pytest.mark.parametrize("registry,name,arg,bad", _cases({int}, ["8", True, -3, 2.5]))
def test_integer_arguments_reject_str_bool_negative_and_float(registry, name, arg, bad):
    with pytest.raises(ArgumentError, match=rf"{arg} must be .*an int.*got {bad!r}") as info:
        _build(registry, name, arg, bad)
    assert isinstance(info.value, (ValueError, TypeError)) and isinstance(info.value, SegattnError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("registry,name,arg,bad", _cases({float}, ["0.5", True, float("nan")]))
def test_float_arguments_reject_str_bool_and_nan(registry, name, arg, bad):
    with pytest.raises(ArgumentError, match=rf"{arg} must be .*number"):
        _build(registry, name, arg, bad)


@pytest.mark.parametrize("registry,name,arg,bad", _cases({bool}, ["yes", 1]))
def test_bool_arguments_reject_str_and_int(registry, name, arg, bad):
    with pytest.raises(ArgumentError, match=rf"{arg} must be True or False"):
        _build(registry, name, arg, bad)


@pytest.mark.parametrize("registry,name", ENTRIES, ids=[n for _, n in ENTRIES])
def test_every_constructor_is_checked(registry, name):
    """The registered class's own __init__ goes through segattn.checks.checked."""
    assert getattr(registry.get(name).__init__, "_checked", False), f"{name}'s __init__ is not @checked"


def test_issue_examples_name_argument_value_and_accepted():
    with pytest.raises(ArgumentError, match=r"num_bases must be an int >= 1, got '8' \(str\)"):
        segattn.create_module("ema", 64, num_bases="8")
    with pytest.raises(ArgumentError, match=r"num_stages must be an int >= 1, got 2.5"):
        segattn.create_module("ema", 64, num_stages=2.5)
    with pytest.raises(ArgumentError, match=r"in_channels must be an int >= 1, got True \(bool\)"):
        segattn.create_module("nonlocal", True)
