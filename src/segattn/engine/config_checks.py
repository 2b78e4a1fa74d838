"""Typed config values on pydantic: each key's type and range, and the one-line error that names them.

The type factories (:func:`number`, :func:`integer`, :func:`text`, :func:`choice`, :func:`numbers`,
:func:`size`, :func:`optional`, ...) return ``Annotated`` pydantic types that also normalise the way
segattn configs always have: numeric text is a number (``"1e-3"`` -> 0.001), ``true``/``false`` are
never numbers, ``yes``/``no``/``on``/``off`` are booleans, a size ``64`` is ``[64, 64]``, ``"null"`` /
``"none"`` text is ``None``. Each carries its expectation in words (the field's ``description``), so
:func:`error_text` turns a pydantic ``ValidationError`` into the same line as before:
``config key optim.lr: got 0, expected a number > 0`` (with a did-you-mean for unknown keys and for
choices). The schema that uses them is :mod:`segattn.engine.config_schema`.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Dict, List, Optional, Sequence

from pydantic import BeforeValidator, Field

NULL_WORDS = ("", "null", "none", "~")


class ConfigError(ValueError):
    """A config key or value that cannot work; the message names the key, the value and what is expected."""


# ------------------------------------------------------------------------------------ normalising
def _number_text(value: Any) -> Any:
    """Booleans are refused (never 1 / 0); numeric text becomes a float; anything else goes on."""
    if isinstance(value, bool):
        raise ValueError("not a number")
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return value
    return value


def _null_text(value: Any) -> Any:
    return None if isinstance(value, str) and value.strip().lower() in NULL_WORDS else value


def _range_text(lo: Optional[float], hi: Optional[float], lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return ""


def _bounds(lo: Optional[float], hi: Optional[float], lo_open: bool, hi_open: bool) -> Dict[str, float]:
    out: Dict[str, float] = {}
    if lo is not None:
        out["gt" if lo_open else "ge"] = lo
    if hi is not None:
        out["lt" if hi_open else "le"] = hi
    return out


def _describe(kind: Any) -> str:
    """The expectation in words that a type factory attached (``description`` of its ``Field``)."""
    for meta in getattr(kind, "__metadata__", ()):
        if getattr(meta, "description", None):
            return str(meta.description)
    return "a value"


# ---------------------------------------------------------------------------------- type factories
def number(lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
           hi_open: bool = False) -> Any:
    """A finite float within the bounds."""
    words = f"a number {_range_text(lo, hi, lo_open, hi_open)}".strip()
    return Annotated[float, BeforeValidator(_number_text), Field(description=words, **_bounds(lo, hi, lo_open, hi_open))]


def integer(lo: Optional[int] = None, hi: Optional[int] = None) -> Any:
    """An int within the bounds (``2000.0`` and ``"2e3"`` count, ``4.7`` and ``true`` do not)."""
    words = f"an integer {_range_text(lo, hi, False, False)}".strip()
    return Annotated[int, BeforeValidator(_number_text), Field(description=words, **_bounds(lo, hi, False, False))]


BOOL = Annotated[bool, Field(description="true or false")]  # also yes/no/on/off/1/0, never 2 or "maybe"


def _non_empty(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("not a non-empty string")
    return value


def text(words: str = "a non-empty string") -> Any:
    """A non-empty string."""
    return Annotated[str, BeforeValidator(_non_empty), Field(description=words)]


def choice(*choices: Any, words: str = "") -> Any:
    """One of ``choices`` (a did-you-mean for a near miss); ``choices`` may be a callable giving them."""
    def check(value: Any) -> Any:
        allowed = tuple(choices[0]()) if len(choices) == 1 and callable(choices[0]) else choices
        if isinstance(value, bool) or value not in allowed:
            hint = difflib.get_close_matches(str(value), [str(c) for c in allowed], n=1)
            raise ValueError(f"one of {', '.join(map(repr, allowed))}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        return value
    kind = int if choices and all(isinstance(c, int) for c in choices) else str
    listed = "" if callable(choices[0]) else f"one of {', '.join(map(repr, choices))}"
    return Annotated[kind, BeforeValidator(check), Field(description=words or listed or "a known name")]


def pattern(regex: str, words: str) -> Any:
    """A string matching ``regex`` (the message says ``words``, not the expression)."""
    return Annotated[str, BeforeValidator(_non_empty), Field(pattern=f"^(?:{regex})$", description=words)]


def numbers(item: Any, length: Optional[int] = None) -> Any:
    """A non-empty list of ``item`` (from :func:`number`); ``length`` fixes the count."""
    count = f"{length} numbers" if length else "a non-empty list of numbers"
    words = f"{count}, each {_describe(item).replace('a number ', '')}"
    sizes = {"min_length": length, "max_length": length} if length else {"min_length": 1}
    return Annotated[List[item], Field(description=words, **sizes)]


def _pair(value: Any) -> Any:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(items) not in (1, 2):
        raise ValueError("not a size")
    return [items[0], items[-1]]


SIZE = Annotated[List[integer(1)], BeforeValidator(_pair),
                 Field(description="a positive integer or [h, w] of positive integers")]


def _mapping(value: Any) -> Any:
    return {} if value is None else value


MAPPING = Annotated[Dict[str, Any], BeforeValidator(_mapping), Field(description="a mapping (key: value, ...)")]

CLASS_WEIGHT_MODES = ("auto", "median", "sqrt")


def _class_weight(value: Any) -> Any:
    if value is None or value in CLASS_WEIGHT_MODES:
        return value
    if isinstance(value, (list, tuple)) and value:
        try:
            weights = [float(_number_text(v)) for v in value]
        except (TypeError, ValueError):
            weights = []
        if weights and all(w >= 0 for w in weights) and any(w > 0 for w in weights):
            return weights
    raise ValueError("not a class weight")


CLASS_WEIGHT = Annotated[Any, BeforeValidator(_class_weight),
                         Field(description="null, 'auto', 'median', 'sqrt' or a list of numbers >= 0 (one per "
                                           "class, not all 0)")]


def optional(kind: Any) -> Any:
    """``None`` (also ``"null"`` / ``"none"`` / empty text) or what ``kind`` accepts."""
    return Annotated[Optional[kind], BeforeValidator(_null_text), Field(description=f"{_describe(kind)}, or null")]


# --------------------------------------------------------------------------------------- messages
def error_text(error: Dict[str, Any], data: Any, sections: Dict[str, Any], top: Any) -> str:
    """One line for a pydantic error (``ValidationError.errors()`` item) of config ``data``: the key
    path, the value given (the whole value of the key, not the failing list item) and the expectation
    in words, or the unknown key with the closest accepted one."""
    loc = [str(p) for p in error["loc"]]
    if error["type"] == "extra_forbidden":
        where, key = ".".join(loc[:-1]), loc[-1]
        accepted = sorted((sections[loc[0]] if where else top).model_fields)
        hint = difflib.get_close_matches(key, accepted, n=1)
        did = f" (did you mean {(where + '.' if where else '') + hint[0]!r}?)" if hint else ""
        full = f"{where}.{key}" if where else key
        kind = "key" if where else "section or key"
        return f"unknown config {kind} {full!r}{did}; accepted in {where or 'the top level'}: {', '.join(accepted)}"
    message = error["msg"].removeprefix("Value error, ")
    if message.startswith("config key"):  # a rule between keys, already worded
        return message
    if len(loc) == 1 and loc[0] in sections:
        return f"config section {loc[0]}: got {_value(data, loc[:1])!r}, expected a mapping (key: value, ...)"
    owner = sections[loc[0]] if loc[0] in sections else top
    name = loc[1] if loc[0] in sections else loc[0]
    field = owner.model_fields.get(name)
    expected = field.description if field is not None and field.description else message
    if message.startswith("one of "):  # a choice: its validator names the choices (and the closest one)
        expected = message
    key = ".".join(loc[:2] if loc[0] in sections else loc[:1])
    return f"config key {key}: got {_value(data, key.split('.'))!r}, expected {expected}"


def _value(data: Any, path: Sequence[str]) -> Any:
    for p in path:
        if not isinstance(data, dict) or p not in data:
            return None
        data = data[p]
    return data
