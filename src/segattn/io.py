"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A reader (or a resumed run) sees either the old file or the complete new one, never a torn write.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Union

from segattn.errors import os_error_in

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
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        failure = os_error_in(exc)
        if failure is not None and (failure is not exc or failure.filename is None):
            raise _write_failed(path, failure) from exc
        raise
    return path


def _write_failed(path: Path, failure: OSError) -> OSError:
    """An ``OSError`` naming ``path``, the reason and the space left on its disk."""
    reason = failure.strerror or str(failure) or type(failure).__name__
    try:
        reason += f" ({shutil.disk_usage(path.parent).free / 2 ** 20:.0f} MiB free on that disk)"
    except OSError:
        pass
    return OSError(failure.errno, f"could not be written: {reason}", str(path))


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


# torch's weights-only unpickler refuses a file in several wordings; each names the foreign object
_FOREIGN_OBJECT = (
    r"GLOBAL (\S+) whose module \S+ is blocked",          # os.system, subprocess.Popen, builtins.eval, ...
    r"Unsupported global: GLOBAL (\S+)",                   # any class or function not on torch's allow-list
    r"reduce for unrecognized function (.+?)(?: which belongs to .*)?$",
    r"new object for nn\.Parameter or .* but got (.+)$",
    r"Can only build .* but got (.+)$",
)


def _readable_name(full: str) -> str:
    """``commands.Popen`` (pickle's Python 2 spelling) -> ``subprocess.Popen``."""
    import _compat_pickle

    module, _, name = full.rpartition(".")
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}" if module else full


def _first_import(path: str) -> str:
    """The first class or function a torch zip file's pickle imports that is not torch's own, or ``""``.

    Read with :mod:`pickletools`, which decodes opcodes without executing anything.
    """
    import pickletools
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            strings: list = []
            for op, arg, _ in pickletools.genops(archive.read(name)):
                if isinstance(arg, str):
                    strings.append(arg)
                found = arg.replace(" ", ".") if op.name in ("GLOBAL", "INST") else (
                    ".".join(strings[-2:]) if op.name == "STACK_GLOBAL" and len(strings) >= 2 else "")
                if found and not found.startswith(("torch.", "collections.OrderedDict", "_codecs.encode")):
                    return _readable_name(found)
    except Exception:  # not a zip, no pickle, a broken stream: nothing to name
        return ""
    return ""


def _foreign_object(message: str, path: str) -> str:
    """The object a weights-only load refused (``"posix.system"``), or ``""`` if the file is merely unreadable."""
    for pattern in _FOREIGN_OBJECT:
        found = re.search(pattern, message, flags=re.MULTILINE)
        if found:
            return _readable_name(found.group(1).strip().rstrip("."))
    if re.search(r"Unsupported operand \d+", message):  # e.g. protocol 4: look for an import ourselves
        return _first_import(path)
    return ""


class Skipped:
    """What :func:`safe_torch_load` puts where a file names one of its ``skip`` globals: an inert object
    of ours that takes any arguments and state and keeps none (the named class or function is never
    imported or called)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "<skipped>"


def _skipped(*args: Any, **kwargs: Any) -> Skipped:
    return Skipped()


def safe_torch_load(path: PathLike, map_location: Any = "cpu", what: str = "checkpoint",
                    skip: Any = ()) -> Any:
    """``torch.load(path, weights_only=True)``: plain data only (tensors, numbers, strings, lists, dicts).

    Unpickling arbitrary objects can run code, so a file holding anything else is refused with a
    ``ValueError`` that says so and names the first such object (``posix.system``, a class, ...); a
    truncated or non-PyTorch file is a ``ValueError`` naming the file too. A missing file is a
    ``FileNotFoundError``.

    ``skip``: fully qualified names (``"mmengine.logging.history_buffer.HistoryBuffer"``) that the
    caller does not read and wants replaced by inert :class:`Skipped` objects instead of refused, e.g.
    the training-state part of another library's checkpoint (torch >= 2.5; older torch refuses them).
    A mapping ``{name: stand_in}`` gives the callable that replaces each name (``None``: :class:`Skipped`).
    """
    import torch

    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a folder, expected a file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols concerns torch, not the user
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            if skip and hasattr(torch.serialization, "safe_globals"):
                given = skip if isinstance(skip, Mapping) else {}
                inert = [(given.get(name) or (_skipped if name.rsplit(".", 1)[-1][:1].islower() else Skipped), name)
                         for name in skip]
                with torch.serialization.safe_globals(inert):
                    return torch.load(path, map_location=map_location, weights_only=True)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a corrupt file fails anywhere in the reader (KeyError, struct.error, ...)
        text = str(exc).strip()
        foreign = _foreign_object(text, path)
        if foreign:
            raise ValueError(f"{what} {path!r} holds objects whose loading could run code (the first: {foreign}), "
                             "not only tensors and plain data; refusing to load it (files written by segattn hold "
                             "plain data only; load it with weights_only=False only if you trust its source)") from None
        unreadable = f"{what} {path!r} is not a readable PyTorch file (truncated or another format)"
        # the reason is torch's first sentence ("... failed finding central directory"); what follows is
        # advice about torch itself, and a bare "[Errno 22] Invalid argument" names no reason at all
        reason = text.splitlines()[0].split(". ")[0].rstrip(".")[:200] if text else ""
        if isinstance(exc, pickle.UnpicklingError) or not reason or re.match(r"\[Errno \d+\]", reason):
            raise ValueError(unreadable) from None
        raise ValueError(f"{unreadable}: {reason}") from None


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
