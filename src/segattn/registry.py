"""One registry type, used for context modules, upsamplers, models, backbones and datasets.

A registry maps a lower-case name to a factory (a class or a function) plus free-form metadata
(paper, family, cost order, ...). Registering is one decorator::

    @MODULES.register("nonlocal", paper="Wang et al., CVPR 2018", family="pairwise", order="O(N^2 C)")
    class NonLocal2d(ContextModule): ...

``create`` checks the keyword arguments against the factory's signature before calling it, so an
unknown keyword raises ``TypeError`` naming the accepted ones, and an unknown name raises
``ValueError`` naming the closest registered names.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional

from segattn.errors import ArgumentError


@dataclass(frozen=True)
class Entry:
    """A registered factory and its metadata."""

    name: str
    factory: Callable[..., Any]
    meta: Dict[str, Any] = field(default_factory=dict)


class Registry:
    """Name -> factory table with close-match errors and keyword checking."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, Entry] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering ``factory`` under ``name`` with ``meta``."""
        key = name.lower()

        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            if key in self._entries and self._entries[key].factory is not factory:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[key] = Entry(key, factory, dict(meta))
            return factory

        return decorator

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def list(self, pattern: str = "*") -> List[str]:
        """Sorted registered names matching the shell-style ``pattern``."""
        if not isinstance(pattern, str):
            raise ArgumentError(f"pattern must be a str (shell-style, e.g. '*' or 'non*'), got {pattern!r}")
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern.lower()))

    def entry(self, name: str) -> Entry:
        """The entry for ``name``; ``ValueError`` with the closest names if it is unknown."""
        if not isinstance(name, str):
            raise ArgumentError(f"{self.kind} name must be a str, got {name!r} ({type(name).__name__})")
        key = name.lower()
        if key not in self._entries:
            close = difflib.get_close_matches(key, list(self._entries), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(self._entries)) or "(none registered)"
            raise ArgumentError(f"unknown {self.kind} {name!r}{hint or '.'} Registered: {known}")
        return self._entries[key]

    def get(self, name: str) -> Callable[..., Any]:
        return self.entry(name).factory

    def meta(self, name: str) -> Dict[str, Any]:
        return dict(self.entry(name).meta)

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build ``name`` with ``args``/``kwargs``, rejecting unknown keywords by name."""
        factory = self.get(name)
        check_kwargs(factory, kwargs, f"{self.kind} {name!r}")
        return factory(*args, **kwargs)


def accepted_kwargs(factory: Callable[..., Any]) -> Optional[List[str]]:
    """Names of keyword arguments ``factory`` accepts, or ``None`` if it takes ``**kwargs``."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = list(inspect.signature(target).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [
        p.name
        for p in params
        if p.name != "self" and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]


def unknown_keywords(kwargs: Dict[str, Any], accepted: List[str]) -> str:
    """The keywords of ``kwargs`` not in ``accepted``, each with a close match for a typo ('' if none)."""
    hints = []
    for k in (k for k in kwargs if k not in accepted):
        close = difflib.get_close_matches(k, accepted, n=1, cutoff=0.6)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ", ".join(hints)


def check_kwargs(factory: Callable[..., Any], kwargs: Dict[str, Any], what: str) -> None:
    """Raise ``TypeError`` naming the accepted keywords if ``kwargs`` holds an unknown one."""
    accepted = accepted_kwargs(factory)
    unknown = unknown_keywords(kwargs, accepted) if accepted is not None else ""
    if unknown:
        raise ArgumentError(f"{what} got unexpected keyword argument(s) {unknown}; accepted: {', '.join(accepted)}")


MODULES = Registry("context module")
UPSAMPLERS = Registry("upsampler")
MODELS = Registry("model")
BACKBONES = Registry("backbone")
DATASETS = Registry("dataset")
