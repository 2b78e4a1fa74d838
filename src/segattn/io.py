"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A reader (or a resumed run) sees either the old file or the complete new one, never a torn write.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Union

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a temporary binary file, then atomically move it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: PathLike, obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def safe_torch_load(path: PathLike, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)``: plain data only (tensors, numbers, strings, lists, dicts).

    Unpickling arbitrary objects can run code, so a file holding anything else is refused with a
    ``ValueError`` naming the file and the first foreign object; a truncated or non-PyTorch file is a
    ``ValueError`` too. A missing file is a ``FileNotFoundError``.
    """
    import pickle
    import re

    import torch

    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a folder, expected a file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is None:
            raise ValueError(f"{what} {path!r} is not a readable PyTorch file (truncated or another format)") from None
        raise ValueError(f"{what} {path!r} holds a Python object ({found.group(1)}), not only tensors and plain data; "
                         "refusing to load it because unpickling it could run code "
                         "(files written by segattn hold plain data only)") from None
    except Exception as exc:  # a corrupt file fails anywhere in the reader (KeyError, struct.error, ...)
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{what} {path!r} is not a readable PyTorch file (truncated or another format): {reason}") from None


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (absolute)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _dir_problem(path: Path) -> str:
    """Why no file can be written in folder ``path`` (created if missing), or ``""`` if one can."""
    target = Path(os.path.abspath(path))
    existing = _nearest_existing(target)
    if not existing.is_dir():
        return "it is a file, not a folder" if existing == target else f"{existing} is a file, not a folder"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".segattn-write-test.", dir=existing)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        where = "" if existing == target else f" in {existing}"
        return f"cannot write{where} ({exc.strerror or exc})"
    return ""


def check_writable_dir(path: PathLike, what: str = "output folder") -> Path:
    """Make sure ``path`` is, or can be created as, a folder a file can be written into; creates nothing.

    Call it before long work starts, so a run does not fail at its very end. Raises
    :class:`segattn.errors.SegattnError` naming ``path`` when it (or a parent) is a file or when
    writing in it (or in its closest existing parent) is refused; the check writes and removes a
    temporary file, so read-only mounts and ACLs count, not only the mode bits.
    """
    from segattn.errors import SegattnError

    problem = _dir_problem(Path(path))
    if problem:
        raise SegattnError(f"{what} {os.fspath(path)} is not usable: {problem}")
    return Path(path)


def check_writable_file(path: PathLike, what: str = "output file", overwrite: bool = True) -> Path:
    """Make sure a file can be written at ``path`` (see :func:`check_writable_dir`); creates nothing.

    A folder at ``path`` is refused; so is an existing file when ``overwrite`` is False.
    """
    from segattn.errors import SegattnError

    path = Path(path)
    if path.is_dir():
        raise SegattnError(f"{what} {path} is a folder, expected a file name")
    if path.exists() and not overwrite:
        raise SegattnError(f"{what} {path} already exists; pass --overwrite to replace it")
    problem = _dir_problem(Path(os.path.abspath(path)).parent)
    if problem:
        raise SegattnError(f"{what} {path} cannot be written: {problem}")
    return path
