"""scripts/archive_runs.py: finished, measured runs packed without weights, unpacked without replacing."""

import importlib.util
import io
import json
import tarfile
from pathlib import Path

import pytest

from segattn.analyze.run import ANALYSIS, VERSION, expand_runs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def archive_runs():
    spec = importlib.util.spec_from_file_location("archive_runs", ROOT / "scripts" / "archive_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(out, entry, result=True, analysis=VERSION):
    rdir = out / "runs" / entry / "seed0"
    (rdir / "train").mkdir(parents=True)
    (rdir / "final.pt").write_bytes(b"weights")
    (rdir / "train" / "last.pt").write_bytes(b"checkpoint")
    (rdir / "train" / "summary.json").write_text(json.dumps({"entry": entry}))
    (rdir / ".segattn.lock").write_text("{}")
    if result:
        (rdir / "result.json").write_text(json.dumps({"entry": entry}))
    if analysis is not None:
        (rdir / ANALYSIS).write_text(json.dumps({"entry": entry, "settings": {"version": analysis, "max_images": None}}))
    return rdir


def test_pack_keeps_finished_measured_runs_without_weights(tmp_path, archive_runs):
    out = tmp_path / "out"
    _run(out, "done")
    _run(out, "unmeasured", analysis=None)
    _run(out, "old", analysis=VERSION - 1)
    _run(out, "training", result=False)
    archive = tmp_path / "a.tar.xz"
    assert archive_runs.main(["pack", str(out), str(archive)]) == 0
    with tarfile.open(archive) as tar:
        names = sorted(tar.getnames())
    assert names == ["runs/done/seed0/analysis.json", "runs/done/seed0/result.json", "runs/done/seed0/train/summary.json"]

    fresh = tmp_path / "fresh"
    assert archive_runs.main(["unpack", str(archive), str(fresh)]) == 0
    restored = fresh / "runs" / "done" / "seed0"
    assert json.loads((restored / "result.json").read_text()) == {"entry": "done"}
    assert expand_runs([fresh]) == [restored]  # counts for the analysis by its stored analysis

    (restored / "result.json").write_text('{"entry": "newer"}')
    (restored / ANALYSIS).unlink()
    assert archive_runs.unpack(archive, fresh) == 0  # a finished run is never replaced, not even in part
    assert json.loads((restored / "result.json").read_text()) == {"entry": "newer"}
    assert not (restored / ANALYSIS).exists()


def test_bad_input_is_one_line(tmp_path, archive_runs, capsys):
    assert archive_runs.main(["pack", str(tmp_path), str(tmp_path / "a.tar.xz")]) == 2
    assert "not a compare output folder" in capsys.readouterr().err
    (tmp_path / "runs").mkdir()
    assert archive_runs.main(["pack", str(tmp_path), str(tmp_path / "a.tar.xz")]) == 2
    assert "nothing to pack" in capsys.readouterr().err
    (tmp_path / "junk.tar.xz").write_bytes(b"not an archive")
    assert archive_runs.main(["unpack", str(tmp_path / "junk.tar.xz"), str(tmp_path / "o")]) == 2
    assert "not a complete xz tar archive" in capsys.readouterr().err
    evil = tmp_path / "evil.tar.xz"
    with tarfile.open(evil, "w:xz") as tar:
        info = tarfile.TarInfo("runs/../../escape.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    assert archive_runs.main(["unpack", str(evil), str(tmp_path / "o")]) == 2
    assert "not under runs/<entry>/seed<k>/" in capsys.readouterr().err
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "o").exists()
    out = tmp_path / "out"
    _run(out, "done")
    archive_runs.pack(out, tmp_path / "good.tar.xz")
    data = (tmp_path / "good.tar.xz").read_bytes()
    (tmp_path / "cut.tar.xz").write_bytes(data[: len(data) // 2])  # an interrupted copy
    assert archive_runs.main(["unpack", str(tmp_path / "cut.tar.xz"), str(tmp_path / "o")]) == 2
    assert "not a complete xz tar archive" in capsys.readouterr().err and not (tmp_path / "o").exists()
