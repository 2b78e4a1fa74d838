"""Argument checks for the public Python API, in one place.

Every public constructor and function checks its arguments at the call and raises
:class:`~segattn.errors.ArgumentError` (a ``SegattnError`` that is also a ``ValueError`` and a
``TypeError``) naming the argument, the value and what is accepted. ``bool`` is not an int, a
string is not a number, a float must be finite.

Two ways to use it:

* ``@checked(**limits)`` on a function or ``__init__`` checks every argument against its type hint
  (``int``, ``float``, ``bool``, ``str``, ``Optional[...]``, ``Union[...]``, ``Sequence[...]``,
  ``Tuple[...]``, a class such as ``Tensor``); ``limits`` gives the accepted range of a number
  (a :class:`Range`; an ``int`` is ``>= 1`` unless told otherwise) or the accepted strings (a tuple)::

      @checked(momentum=Range(0, 1), eps=POSITIVE)
      def __init__(self, in_channels: int, *, num_bases: int = 64, momentum: float = 0.9, eps: float = 1e-6): ...

* :func:`check_int`, :func:`check_float`, :func:`check_bool`, :func:`check_choice` for one value.

:func:`warn_non_finite` warns once for an input tensor holding NaN or inf (the model's ``forward`` in
eval mode, ``segattn predict`` / ``eval`` / ``viz`` per image).
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import math
import numbers
import os
import typing
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

from segattn.errors import ArgumentError, NonFiniteInputWarning

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Range:
    """Accepted numbers: ``low <= x <= high`` (``<`` where the bound is open); ``None`` is unbounded."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: object) -> bool:
        v = float(value)  # type: ignore[arg-type]
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return not (self.high is not None and (v >= self.high if self.high_open else v > self.high))

    def text(self) -> str:
        """``">= 1"``, ``"in [0, 1)"``, ``""`` for an unbounded range."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return ""


COUNT = Range(1)
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, None, low_open=True)
UNIT = Range(0, 1)
DROPOUT = Range(0, 1, high_open=True)
ANY = Range()
Limit = Union[Range, Tuple[str, ...]]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _got(value: Any) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _fail(what: Optional[str], name: str, expected: str, value: Any) -> ArgumentError:
    prefix = f"{what}: " if what else ""
    return ArgumentError(f"{prefix}{name} must be {expected}, got {_got(value)}")


def _with(text: str, rng: Range) -> str:
    bound = rng.text()
    return f"{text} {bound}" if bound else text


def check_int(name: str, value: Any, *, min: Optional[int] = 1, max: Optional[int] = None,
              what: Optional[str] = None) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) in ``[min, max]``; else :class:`ArgumentError`."""
    rng = Range(min, max)
    if not _is_int(value) or value not in rng:
        raise _fail(what, name, _with("an int", rng), value)
    return int(value)


def check_float(name: str, value: Any, rng: Range = ANY, *, what: Optional[str] = None) -> float:
    """``value`` as a ``float`` if it is a finite real number (not a bool, not a str) in ``rng``."""
    if not _is_number(value) or value not in rng:
        raise _fail(what, name, _with("a finite number", rng), value)
    return float(value)


def check_bool(name: str, value: Any, *, what: Optional[str] = None) -> bool:
    """``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise _fail(what, name, "True or False", value)
    return value


def check_choice(name: str, value: Any, choices: Sequence[str], *, what: Optional[str] = None) -> str:
    """``value`` if it is one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise _fail(what, name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def _accepts(hint: Any, value: Any, limit: Optional[Limit]) -> bool:
    """Whether ``value`` fits the type hint ``hint`` and ``limit``; unknown hints accept anything."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    rng = limit if isinstance(limit, Range) else None
    if hint is Any:
        return True
    if origin is Union:
        return any(_accepts(a, value, limit) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value) and value in (rng or COUNT)
    if hint is float:
        return _is_number(value) and value in (rng or ANY)
    if hint is str:
        if isinstance(value, os.PathLike) and limit is None:  # a path typed as str
            return True
        return isinstance(value, str) and (not isinstance(limit, tuple) or value in limit)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_accepts(args[0], v, limit) for v in value)
        return not args or (len(value) == len(args) and all(_accepts(a, v, limit) for a, v in zip(args, value)))
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable):
        if hasattr(value, "tolist") and hasattr(value, "ndim") and value.ndim == 1:  # a 1-D tensor or array
            value = value.tolist()
        return isinstance(value, (tuple, list)) and all(_accepts(args[0], v, limit) for v in value) if args else True
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, collections.abc.Mapping)
    if isinstance(hint, type) and origin is None:
        return isinstance(value, hint)
    if isinstance(origin, type):  # os.PathLike[str], Type[X], ...
        return isinstance(value, origin)
    return True


def _expected(hint: Any, limit: Optional[Limit]) -> str:
    """What ``hint`` with ``limit`` accepts, in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    rng = limit if isinstance(limit, Range) else None
    if origin is Union:
        parts = [_expected(a, limit) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("None")
        return " or ".join(dict.fromkeys(parts))
    if hint is bool:
        return "True or False"
    if hint is int:
        return _with("an int", rng or COUNT)
    if hint is float:
        return _with("a finite number", rng or ANY)
    if hint is str:
        return "one of " + ", ".join(repr(c) for c in limit) if isinstance(limit, tuple) else "a str"
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        return f"a tuple of {len(args)} items, each {_expected(args[0], limit)}"
    if origin in (tuple, list, collections.abc.Sequence, collections.abc.Iterable):
        return f"a list or tuple whose items are each {_expected(args[0], limit)}" if args else "a list or tuple"
    if origin in (dict, collections.abc.Mapping):
        return "a dict"
    if isinstance(hint, type):
        return f"a {hint.__name__}"
    if isinstance(origin, type):
        return f"a {origin.__name__}"
    return str(hint)


def check_value(name: str, value: Any, hint: Any, limit: Optional[Limit] = None, *, what: Optional[str] = None) -> None:
    """:class:`ArgumentError` unless ``value`` fits the type hint ``hint`` and ``limit``."""
    if not _accepts(hint, value, limit):
        raise _fail(what, name, _expected(hint, limit), value)


def warn_non_finite(x: Any, what: str, note: str = "", stacklevel: int = 2) -> bool:
    """Warn (:class:`~segattn.errors.NonFiniteInputWarning`) naming ``what`` if ``x`` (a tensor or array) holds NaN
    or inf values; returns whether it did. One reduction over ``x`` (and a device sync on a GPU)."""
    finite = np.isfinite(x) if isinstance(x, np.ndarray) else x.isfinite()
    bad = int((~finite).sum())
    if bad:
        total = x.size if isinstance(x, np.ndarray) else x.numel()
        warnings.warn(f"{what} has {bad} non-finite value(s) (NaN or inf) of {total}; the output computed from it "
                      f"is not meaningful (NaN, or a constant prediction){'; ' + note if note else ''}",
                      NonFiniteInputWarning,
                      stacklevel=stacklevel + 1)
    return bool(bad)


def _hints(func: Callable[..., Any]) -> Dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:  # an annotation only importable for type checkers: check the others
        out: Dict[str, Any] = {}
        for key, ann in getattr(func, "__annotations__", {}).items():
            try:
                out[key] = eval(ann, func.__globals__) if isinstance(ann, str) else ann  # noqa: S307
            except Exception:
                continue
        return out


def checked(**limits: Limit) -> Callable[[F], F]:
    """Decorator: check every argument of the call against its type hint and ``limits`` (see the module doc)."""

    def decorate(func: F) -> F:
        sig = inspect.signature(func)
        unknown = [k for k in limits if k not in sig.parameters]
        if unknown:
            raise TypeError(f"checked(): {func.__qualname__} has no argument(s) {unknown}")
        skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        params = [p for p in sig.parameters.values() if p.kind not in skip]
        method = bool(params) and params[0].name == "self"
        hints: Dict[str, Any] = {}

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            what = type(args[0]).__name__ if method and args else func.__name__
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError as exc:
                text = str(exc)
                if "unexpected keyword" in text:  # name what is taken, as the registries do
                    text += f"; accepted: {', '.join(p.name for p in params if not (method and p is params[0]))}"
                raise ArgumentError(f"{what}: {text}") from None
            if not hints:
                hints.update(_hints(func))
            for i, param in enumerate(params):
                if (method and i == 0) or param.name not in bound.arguments:
                    continue
                value = bound.arguments[param.name]
                if value is param.default or param.name not in hints:
                    continue
                check_value(param.name, value, hints[param.name], limits.get(param.name), what=what)
            return func(*args, **kwargs)

        wrapper._checked = True  # type: ignore[attr-defined]
        return typing.cast(F, wrapper)

    return decorate


__all__ = [
    "ANY", "COUNT", "DROPOUT", "NON_NEGATIVE", "POSITIVE", "UNIT", "Range",
    "check_bool", "check_choice", "check_float", "check_int", "check_value", "checked", "warn_non_finite",
]
