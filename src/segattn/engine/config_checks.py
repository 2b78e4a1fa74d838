"""Typed checks of config values: each key's type and range, and the error that names them.

``check(value, key)`` returns the value normalised (``"1e-3"`` -> 0.001, ``"yes"`` -> True, ``64`` ->
``[64, 64]``) or raises :class:`ConfigError` naming the key, the value given and what is expected.
The schema that uses them is :mod:`segattn.engine.config_schema`.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from dataclasses import field
from typing import Any, Dict, List, Optional, Sequence, Tuple


class ConfigError(ValueError):
    """A config key or value that cannot work; the message names the key, the value and what is expected."""


# ------------------------------------------------------------------------------------------ checks
class Check:
    """One key's type and range: ``check(value, key)`` returns the value normalised or raises ConfigError."""

    expected = "a value"

    def __call__(self, value: Any, key: str) -> Any:
        raise NotImplementedError

    def fail(self, value: Any, key: str, expected: Optional[str] = None) -> ConfigError:
        return ConfigError(f"config key {key}: got {value!r}, expected {expected or self.expected}")


def _number(value: Any) -> Optional[float]:
    """``value`` as a finite float (numbers and numeric text such as ``"1e-3"``), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _range_text(lo: Optional[float], hi: Optional[float], lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return ""


class Float(Check):
    def __init__(self, lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
                 hi_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        self.expected = f"a number {_range_text(lo, hi, lo_open, hi_open)}".strip()

    def __call__(self, value: Any, key: str) -> float:
        x = _number(value)
        if x is None:
            raise self.fail(value, key)
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            raise self.fail(value, key)
        if self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)):
            raise self.fail(value, key)
        return x


class Int(Float):
    def __init__(self, lo: Optional[int] = None, hi: Optional[int] = None, choices: Sequence[int] = ()) -> None:
        super().__init__(lo, hi)
        self.choices = tuple(choices)
        self.expected = (f"one of {', '.join(map(str, choices))}" if choices
                         else f"an integer {_range_text(lo, hi, False, False)}".strip())

    def __call__(self, value: Any, key: str) -> int:
        x = super().__call__(value, key)
        if x != int(x) or (self.choices and int(x) not in self.choices):
            raise self.fail(value, key)
        return int(x)


class Bool(Check):
    expected = "true or false"
    WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}

    def __call__(self, value: Any, key: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in self.WORDS:
            return self.WORDS[value.strip().lower()]
        raise self.fail(value, key)


class Str(Check):
    def __init__(self, choices: Sequence[str] = (), pattern: Optional[str] = None, what: str = "") -> None:
        self.choices, self.pattern = tuple(choices), pattern
        self.expected = what or (f"one of {', '.join(repr(c) for c in choices)}" if choices else "a non-empty string")

    def __call__(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(value, key)
        if self.choices and value not in self.choices:
            hint = difflib.get_close_matches(str(value), self.choices, n=1)
            raise self.fail(value, key, self.expected + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise self.fail(value, key)
        return value


class Size(Check):
    """A positive int ``n`` (-> ``[n, n]``) or ``[h, w]`` / ``[n]`` of positive ints; stored as ``[h, w]``."""

    expected = "a positive integer or [h, w] of positive integers"
    _int = Int(1)

    def __call__(self, value: Any, key: str) -> List[int]:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(items) not in (1, 2):
            raise self.fail(value, key)
        try:
            sizes = [self._int(v, key) for v in items]
        except ConfigError:
            raise self.fail(value, key) from None
        return [sizes[0], sizes[-1]]


class Numbers(Check):
    """A list of numbers, each checked by ``item``; ``length`` fixes the count."""

    def __init__(self, item: Float, length: Optional[int] = None) -> None:
        self.item, self.length = item, length
        count = f"{length} numbers" if length else "a non-empty list of numbers"
        self.expected = f"{count}, each {item.expected.replace('a number ', '')}"

    def __call__(self, value: Any, key: str) -> List[float]:
        if not isinstance(value, (list, tuple)) or not value or (self.length and len(value) != self.length):
            raise self.fail(value, key)
        try:
            return [self.item(v, key) for v in value]
        except ConfigError:
            raise self.fail(value, key) from None


class Mapping_(Check):
    expected = "a mapping (key: value, ...)"

    def __call__(self, value: Any, key: str) -> Dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(value, key)
        return copy.deepcopy(value)


class Opt(Check):
    """``None`` or what ``check`` accepts (empty, ``"null"`` or ``"none"`` text counts as ``None``)."""

    def __init__(self, check: Check) -> None:
        self.check = check
        self.expected = f"{check.expected}, or null"

    def __call__(self, value: Any, key: str) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none", "~")):
            return None
        try:
            return self.check(value, key)
        except ConfigError:
            raise self.fail(value, key) from None


class ClassWeight(Check):
    expected = "null, 'auto', 'median', 'sqrt' or a list of numbers >= 0 (one per class, not all 0)"
    MODES = ("auto", "median", "sqrt")
    _item = Float(0.0)

    def __call__(self, value: Any, key: str) -> Any:
        if value is None or value in self.MODES:
            return value
        if isinstance(value, (list, tuple)) and value:
            try:
                weights = [self._item(v, key) for v in value]
            except ConfigError:
                raise self.fail(value, key) from None
            if any(w > 0 for w in weights):
                return weights
        raise self.fail(value, key)


def _f(default: Any, check: Check) -> Any:
    """A dataclass field with its check; mutable defaults are copied per instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"check": check})
    return field(default=default, metadata={"check": check})


def _loss_names() -> Tuple[str, ...]:
    try:
        from segattn.models.losses import LOSSES
    except ImportError:  # pragma: no cover - engine without the models package
        return ("ce",)
    return tuple(sorted(LOSSES))


class _LossName(Str):
    def __call__(self, value: Any, key: str) -> str:
        self.choices = _loss_names()
        self.expected = f"one of {', '.join(repr(c) for c in self.choices)}"
        return super().__call__(value, key)


_POS_INT, _NONNEG_INT = Int(1), Int(0)
_DEVICE = Str(pattern=r"auto|cpu|mps|cuda(:\d+)?", what="'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps'")
