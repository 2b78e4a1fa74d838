"""Read an mmengine / mmcv Python config as data, without executing it.

mmengine stores the merged config of a run as Python text in ``checkpoint["meta"]["cfg"]`` (mmcv 1.x
in ``meta["config"]``): a sequence of top-level assignments such as ``norm_cfg = dict(type='BN')``
and ``model = dict(backbone=dict(...), ...)``. :func:`parse_config` evaluates that text with Python's
:mod:`ast` and nothing else: literals (numbers, strings, ``True``/``False``/``None``), lists, tuples,
sets and dicts, ``dict(key=value, ...)``, ``list(...)`` / ``tuple(...)`` of a literal, unary minus,
and names assigned earlier in the same text. Anything else (imports, calls of other functions,
attribute access, arithmetic, comprehensions, ``_base_`` inheritance) is a :class:`ConfigError` that
names the line, because evaluating it could run code or needs files we do not have.
"""

from __future__ import annotations

import ast
from typing import Any, Dict, List, Mapping, Optional

from segattn.errors import SegattnError


class ConfigError(SegattnError):
    """A config text that is not plain data (the message names the line)."""


_CONTAINERS = {"list": list, "tuple": tuple}


def _fail(node: ast.AST, what: str, source: str) -> ConfigError:
    line = getattr(node, "lineno", "?")
    return ConfigError(f"{source}, line {line}: {what}; only literals, dict(...)/list(...)/tuple(...) and names "
                       "assigned earlier can be read (the config is never executed)")


def _value(node: ast.AST, env: Mapping[str, Any], source: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_value(e, env, source) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict):
        out: Dict[Any, Any] = {}
        for k, v in zip(node.keys, node.values):
            if k is None:  # {**other}
                out.update(_mapping(v, env, source))
            else:
                out[_value(k, env, source)] = _value(v, env, source)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _value(node.operand, env, source)
        if isinstance(operand, (int, float)) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
        raise _fail(node, "a sign applied to something other than a number", source)
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise _fail(node, f"name {node.id!r} is not assigned earlier in the config", source)
        return env[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return _call(node, env, source)
    kind = type(node).__name__
    raise _fail(node, f"a {kind} expression ({ast.unparse(node)[:60]!r})", source)


def _mapping(node: ast.AST, env: Mapping[str, Any], source: str) -> Dict[str, Any]:
    value = _value(node, env, source)
    if not isinstance(value, dict):
        raise _fail(node, "** applied to something other than a dict", source)
    return value


def _call(node: ast.Call, env: Mapping[str, Any], source: str) -> Any:
    name = node.func.id  # type: ignore[attr-defined]
    if name == "dict":
        out: Dict[str, Any] = {}
        for arg in node.args:
            out.update(_mapping(arg, env, source))
        for kw in node.keywords:
            if kw.arg is None:
                out.update(_mapping(kw.value, env, source))
            else:
                out[kw.arg] = _value(kw.value, env, source)
        return out
    if name in _CONTAINERS and len(node.args) <= 1 and not node.keywords:
        items = _value(node.args[0], env, source) if node.args else []
        if not isinstance(items, (list, tuple)):
            raise _fail(node, f"{name}(...) of something other than a list or tuple", source)
        return _CONTAINERS[name](items)
    raise _fail(node, f"a call of {name}(...)", source)


def parse_config(text: str, source: str = "config") -> Dict[str, Any]:
    """The top-level assignments of an mmengine / mmcv config text as a dict (see the module docstring).

    ``source`` names the text in error messages (a file name, ``"meta['cfg']"``). A config that
    still inherits (``_base_ = [...]``) is refused: give the merged text (what a checkpoint stores,
    or ``mmengine.Config.fromfile(path).dump(out)``).
    """
    if not isinstance(text, str):
        raise ConfigError(f"{source}: expected config text (a str), got {type(text).__name__}")
    try:
        tree = ast.parse(text, filename=source)
    except SyntaxError as err:
        raise ConfigError(f"{source}, line {err.lineno}: not valid Python config text ({err.msg})") from None
    env: Dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):  # a docstring
            continue
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            env[stmt.targets[0].id] = _value(stmt.value, env, source)
            continue
        kind = {ast.Import: "an import", ast.ImportFrom: "an import"}.get(type(stmt), f"a {type(stmt).__name__} statement")
        raise _fail(stmt, kind, source)
    if "_base_" in env:
        raise ConfigError(f"{source}: the config inherits from _base_ files {env['_base_']!r}; give the merged "
                          "config instead (what an mmseg checkpoint stores in meta['cfg'], or "
                          "mmengine.Config.fromfile(path).dump('merged.py'))")
    return env


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


__all__: List[str] = ["ConfigError", "parse_config", "get", "find_type"]
