import json
import os
import stat

import pytest

from segattn.io import atomic_write, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_and_keeps_usual_permissions(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "f.txt", "one")
    atomic_write_json(tmp_path / "a" / "f.json", {"x": 1})
    assert path.read_text() == "one" and json.loads((tmp_path / "a" / "f.json").read_text()) == {"x": 1}
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_failed_write_leaves_old_file_and_no_temporaries(tmp_path):
    path = atomic_write_text(tmp_path / "f.txt", "old")

    def broken(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
