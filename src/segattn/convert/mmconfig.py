"""Read an mmengine / mmcv Python config as data, without executing it.

mmengine stores the merged config of a run as Python text in ``checkpoint["meta"]["cfg"]`` (mmcv 1.x
in ``meta["config"]``): a sequence of top-level assignments such as ``norm_cfg = dict(type='BN')``
and ``model = dict(backbone=dict(...), ...)``. :func:`parse_config` evaluates that text with Python's
:mod:`ast` and nothing else: literals (numbers, strings, ``True``/``False``/``None``), lists, tuples,
sets and dicts, ``dict(key=value, ...)``, ``list(...)`` / ``tuple(...)`` of a literal, unary minus,
and names assigned earlier in the same text. Anything else (calls of other functions, attribute
access, arithmetic, comprehensions) is a :class:`ConfigError` that names the line, because evaluating
it could run code.

Only what is asked for is evaluated: with ``keys=("model", "data.test.pipeline", ...)`` the other
assignments are never looked at beyond their syntax, so a line the reader cannot evaluate but nobody
reads (mmseg 0.x writes ``gpu_ids = range(0, 4)`` after every distributed run) does no harm.
Statements other than assignments (imports, functions) and ``_base_`` inheritance mean the text is a
config *source* file, not a merged config; they are refused with the way to get the merged text.
"""

from __future__ import annotations

import ast
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from segattn.errors import SegattnError


class ConfigError(SegattnError):
    """A config text that is not plain data (the message names the line)."""


_CONTAINERS = {"list": list, "tuple": tuple}
_MISSING = object()
#: how to get a merged config, for both mmseg generations (named in refusals)
MERGED_HOWTO = ("pass a merged config instead (--config FILE, config=): the dump of the config file "
                "(mmseg 1.x: mmengine.Config.fromfile(path).dump('merged.py'); "
                "mmseg 0.x: mmcv.Config.fromfile(path).dump('merged.py')) or the text that a checkpoint of "
                "the same run stores (1.x: meta['cfg'], 0.x: meta['config'])")


def _fail(node: ast.AST, what: str, source: str) -> ConfigError:
    line = getattr(node, "lineno", "?")
    return ConfigError(f"{source}, line {line}: {what}; only literals, dict(...)/list(...)/tuple(...) and names "
                       "assigned earlier can be read (the config is never executed)")


class _Reader:
    """Evaluates the assignments of one config text on demand (each at most once)."""

    def __init__(self, assigns: Sequence[Tuple[str, ast.AST]], source: str) -> None:
        self.assigns = list(assigns)
        self.source = source
        self.cache: Dict[int, Any] = {}

    def lookup(self, node: ast.Name, before: int) -> int:
        """Index of the last assignment of ``node.id`` before statement ``before``."""
        for i in range(before - 1, -1, -1):
            if self.assigns[i][0] == node.id:
                return i
        raise _fail(node, f"name {node.id!r} is not assigned earlier in the config", self.source)

    def statement(self, i: int) -> Any:
        if i not in self.cache:
            self.cache[i] = self.value(self.assigns[i][1], i)
        return self.cache[i]

    def value(self, node: ast.AST, at: int) -> Any:  # noqa: C901 - one branch per syntax form
        source = self.source
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [self.value(e, at) for e in node.elts]
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.Dict):
            out: Dict[Any, Any] = {}
            for k, v in zip(node.keys, node.values):
                if k is None:  # {**other}
                    out.update(self.mapping(v, at))
                else:
                    out[self.value(k, at)] = self.value(v, at)
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.value(node.operand, at)
            if isinstance(operand, (int, float)) and not isinstance(operand, bool):
                return -operand if isinstance(node.op, ast.USub) else operand
            raise _fail(node, "a sign applied to something other than a number", source)
        if isinstance(node, ast.Name):
            return self.statement(self.lookup(node, at))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self.call(node, at)
        kind = type(node).__name__
        raise _fail(node, f"a {kind} expression ({ast.unparse(node)[:60]!r})", source)

    def mapping(self, node: ast.AST, at: int) -> Dict[str, Any]:
        value = self.value(node, at)
        if not isinstance(value, dict):
            raise _fail(node, "** applied to something other than a dict", self.source)
        return value

    def call(self, node: ast.Call, at: int) -> Any:
        name = node.func.id  # type: ignore[attr-defined]
        if name == "dict":
            out: Dict[str, Any] = {}
            for arg in node.args:
                out.update(self.mapping(arg, at))
            for kw in node.keywords:
                if kw.arg is None:
                    out.update(self.mapping(kw.value, at))
                else:
                    out[kw.arg] = self.value(kw.value, at)
            return out
        if name in _CONTAINERS and len(node.args) <= 1 and not node.keywords:
            items = self.value(node.args[0], at) if node.args else []
            if not isinstance(items, (list, tuple)):
                raise _fail(node, f"{name}(...) of something other than a list or tuple", self.source)
            return _CONTAINERS[name](items)
        raise _fail(node, f"a call of {name}(...)", self.source)

    def select(self, node: ast.AST, at: int, parts: Sequence[str]) -> Any:
        """The value at ``parts`` below ``node``, evaluating only that branch where the syntax allows."""
        while parts:
            if isinstance(node, ast.Name):
                at = self.lookup(node, at)
                node = self.assigns[at][1]
                continue
            plain_call = (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"
                          and not node.args and all(kw.arg is not None for kw in node.keywords))
            if plain_call:
                found = [kw.value for kw in node.keywords if kw.arg == parts[0]]  # type: ignore[union-attr]
            elif isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
                found = [v for k, v in zip(node.keys, node.values)
                         if isinstance(k, ast.Constant) and k.value == parts[0]]
            else:  # built from other dicts (dict(base, ...), **x): evaluate it whole, then walk
                return get(self.value(node, at), ".".join(parts), _MISSING)
            if not found:
                return _MISSING
            node, parts = found[-1], parts[1:]
        return self.value(node, at)


def _statements(tree: ast.Module, source: str) -> List[Tuple[str, ast.AST]]:
    assigns: List[Tuple[str, ast.AST]] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):  # a docstring
            continue
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            assigns.append((stmt.targets[0].id, stmt.value))
            continue
        kind = {ast.Import: "an import", ast.ImportFrom: "an import"}.get(type(stmt), f"a {type(stmt).__name__} statement")
        line = getattr(stmt, "lineno", "?")
        raise ConfigError(f"{source}, line {line}: {kind}; a merged config holds assignments only (the config is "
                          f"never executed); {MERGED_HOWTO}")
    return assigns


def parse_config(text: str, source: str = "config", keys: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """The top-level assignments of an mmengine / mmcv config text as a dict (see the module docstring).

    ``keys``: dotted paths (``"model"``, ``"data.test.pipeline"``) to evaluate; the result holds those
    that exist, nested as in the config, and nothing else is evaluated. ``None``: every assignment.
    ``source`` names the text in error messages (a file name, ``"meta['cfg']"``). A config that
    still inherits (``_base_ = [...]``) is refused: give the merged text.
    """
    if not isinstance(text, str):
        raise ConfigError(f"{source}: expected config text (a str), got {type(text).__name__}")
    try:
        tree = ast.parse(text, filename=source)
    except SyntaxError as err:
        raise ConfigError(f"{source}, line {err.lineno}: not valid Python config text ({err.msg})") from None
    assigns = _statements(tree, source)
    reader = _Reader(assigns, source)
    bases = [node for name, node in assigns if name == "_base_"]
    if bases:
        shown = ast.unparse(bases[0])[:120]
        raise ConfigError(f"{source}: the config inherits from _base_ files ({shown}), which are not here; "
                          f"{MERGED_HOWTO}")
    if keys is None:
        return {name: reader.statement(i) for i, (name, _) in enumerate(assigns)}
    out: Dict[str, Any] = {}
    last = {name: i for i, (name, _) in enumerate(assigns)}
    for path in keys:
        top, *rest = path.split(".")
        if top not in last:
            continue
        i = last[top]
        value = reader.select(assigns[i][1], i, rest) if rest else reader.statement(i)
        if value is _MISSING:
            continue
        node, parts = out, [top] + rest
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def get(cfg: Mapping[str, Any], path: str, default: Any = None) -> Any:
    """``cfg["a"]["b"]`` for ``path="a.b"``; ``default`` when any step is missing."""
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def find_type(cfg: Mapping[str, Any], *paths: str) -> Optional[str]:
    """The ``type`` of the first dict found at one of ``paths``."""
    for path in paths:
        node = get(cfg, path)
        if isinstance(node, Mapping) and isinstance(node.get("type"), str):
            return node["type"]
    return None


__all__: List[str] = ["ConfigError", "MERGED_HOWTO", "parse_config", "get", "find_type"]
