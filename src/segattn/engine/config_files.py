"""Config files and overrides: YAML/JSON with ``_base_`` inheritance, ``a.b=value`` strings, ``load_config``.

The schema the data is checked against is :mod:`segattn.engine.config_schema`.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from segattn.engine.config_checks import ConfigError
from segattn.engine.config_schema import Config, config_from_dict
from segattn.engine.finetune import init_settings

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def deep_merge(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
    """``top`` over ``base``; mappings merge recursively, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# YAML 1.1 (PyYAML) reads 1e-3 as text; YAML 1.2 and JSON read it as a number, and so do we
_FLOAT_RE = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


def yaml_loader() -> Any:
    """PyYAML's safe loader that also reads scientific notation without a dot (``1e-3``) as a float and
    refuses a key repeated in one mapping (PyYAML keeps the last silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> Dict[Any, Any]:
        seen: Dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:  # YAML keeps the last silently: a whole section or setting would be lost
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1}); expected each key once",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """``json.loads`` hook: a key given twice in one object is an error (JSON keeps the last silently)."""
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"duplicate key(s) {repeated}; expected each key once")
    return dict(pairs)


def _read_file(path: Path) -> Dict[str, Any]:
    """The mapping in a YAML/JSON file; a syntax error is a ``ConfigError`` naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not a UTF-8 text file") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    else:
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - exercised only without PyYAML
            raise ImportError(f"reading {path} needs PyYAML (pip install 'segattn[yaml]'); or use JSON") from exc
        try:
            data = yaml.load(text, Loader=yaml_loader())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    if data is None:  # an empty (or comments-only) file: every default, 80k iterations, was run silently
        raise ConfigError(f"{path}: the config file is empty; expected a mapping of sections (model:, data:, ...; "
                          "`{}` for all defaults)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections, got {type(data).__name__}")
    return data


def resolve_config_path(path: str) -> Path:
    """A path as given, else relative to the shipped ``segattn/configs`` folder (with or without .yaml)."""
    candidates = [Path(path), CONFIG_DIR / path, CONFIG_DIR / f"{path}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    if Path(path).is_dir():
        raise ConfigError(f"config {path!r} is a folder; expected a YAML or JSON config file (or a shipped name, "
                          "see `segattn configs`)")
    raise FileNotFoundError(f"config {path!r} not found (also looked under {CONFIG_DIR}); see `segattn configs`")


def load_config_dict(path: str, _seen: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """The merged plain data of ``path`` and its ``_base_`` chain."""
    file = resolve_config_path(path)
    key = str(file.resolve())
    if key in _seen:
        raise ValueError(f"config base cycle: {' -> '.join(_seen + (key,))}")
    data = _read_file(file)
    base = data.pop("_base_", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{file}: _base_ must name one config file (a path relative to {file.name} or a shipped "
                          f"config name), got {base!r}")
    base_path = file.parent / base
    base_data = load_config_dict(str(base_path) if base_path.is_file() else base, _seen + (key,))
    return deep_merge(base_data, data)


def parse_value(text: str) -> Any:
    """An override value: YAML scalar/list/mapping (``1e-3`` is a number) if PyYAML is there, else JSON,
    else the raw text."""
    try:
        import yaml

        return yaml.load(text, Loader=yaml_loader())
    except ImportError:  # pragma: no cover
        pass
    except Exception:
        return text
    try:  # pragma: no cover
        return json.loads(text)
    except ValueError:  # pragma: no cover
        return text


def apply_overrides(data: Dict[str, Any], overrides: Iterable[str]) -> Dict[str, Any]:
    """Apply ``a.b.c=value`` strings to nested plain data (a copy); keys inside ``kwargs`` may be new."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = parse_value(raw)
    return out


def with_init(data: Dict[str, Any], overrides: Iterable[str] = (), init: Optional[str] = None) -> Dict[str, Any]:
    """``apply_overrides(data, overrides)``, with the settings of the ``model.init`` folder (``init``,
    else the overrides', else the file's) between the two (:mod:`segattn.engine.finetune`)."""
    overrides = list(overrides)
    top = apply_overrides({}, overrides).get("model")
    folder = init or (top.get("init") if isinstance(top, dict) else None)
    if not folder and isinstance(data.get("model"), dict):
        folder = data["model"].get("init")
    if folder:
        layer = init_settings(folder)
        data = deep_merge(data, layer)
        data["model"]["kwargs"] = layer["model"]["kwargs"]  # replaced: a config's head widths are not the folder's
    return apply_overrides(data, overrides)


def load_config(path: Optional[str] = None, overrides: Iterable[str] = ()) -> Config:
    """Read ``path`` (YAML/JSON, with its bases), apply ``overrides``, and check every key (a
    ``model.init`` folder's settings come between the file and the overrides)."""
    data = load_config_dict(path) if path else {}
    try:
        return config_from_dict(with_init(data, overrides))
    except ConfigError as exc:
        if path is None:
            raise
        raise ConfigError(f"{path}: {exc}") from None


def save_config(cfg: Config, path: str) -> None:
    """Write ``cfg`` as JSON (always readable back with :func:`load_config`)."""
    from segattn.io import atomic_write_json

    atomic_write_json(path, cfg.to_dict())


def list_configs(pattern: str = "*") -> List[str]:
    """Shipped config names (relative to ``segattn/configs``, without ``_base_`` files and ``plans``)."""
    import fnmatch

    names = []
    for p in sorted(CONFIG_DIR.rglob("*")):
        if p.suffix in (".yaml", ".yml", ".json") and not {"_base_", "plans"} & set(p.parts):
            rel = str(p.relative_to(CONFIG_DIR))
            if fnmatch.fnmatch(rel, pattern):
                names.append(rel)
    return names
