"""A folder nobody can write into, also when the tests run as root (which ignores mode bits)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator


def _writable(folder: Path) -> bool:
    try:
        fd, tmp = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


@contextlib.contextmanager
def read_only_dir(folder: Path, monkeypatch) -> Iterator[Path]:  # noqa: ANN001
    """``folder`` made read-only: mode 0555; as root also the immutable attribute (``chattr +i``);
    where neither stops writes, writing into it is refused by patching ``os.open`` for that folder."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o555)
    immutable = False
    if _writable(folder):
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    if _writable(folder):  # no way to make it read-only here: simulate EACCES for files created in it
        real_open = os.open

        def guarded_open(path, flags, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            if flags & os.O_CREAT and Path(os.path.abspath(path)).parent == folder.resolve():
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", guarded_open)
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        os.chmod(folder, 0o755)
