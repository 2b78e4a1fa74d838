"""Fixes found by running the documentation as a new user would (issue: every documented command runs).

Each test here failed before its fix: ``segattn analyze`` overwrote an earlier report unasked,
``segattn data download`` answered ``error: ...`` with exit 1 and a path outside the repository, a
missing dataset left an empty work dir behind, and SEGATTN_DOCS_SHORT did not exist.
"""

from __future__ import annotations

import pytest

from segattn.cli import main


def test_analyze_refuses_to_overwrite_a_report_unless_asked(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "analysis.md").write_text("an earlier report\n")
    assert main(["analyze", str(tmp_path / "run.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segattn analyze: error: ") and "--overwrite" in err[0]
    assert (out / "analysis.md").read_text() == "an earlier report\n"
    # with --overwrite the next check speaks: the run itself
    assert main(["analyze", str(tmp_path / "run.pt"), "--out", str(out), "--overwrite"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_missing_dataset_leaves_no_work_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEGATTN_DATA", raising=False)
    assert main(["train", "--config", "camvid/fcn_r18c_camvid_cpu.yaml", "--work-dir", "runs/x"]) == 2
    err = capsys.readouterr().err
    assert "SEGATTN_DATA" in err and "segattn data download camvid" in err
    assert not (tmp_path / "runs").exists(), list(tmp_path.rglob("*"))


def test_a_missing_dataset_keeps_an_existing_work_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEGATTN_DATA", raising=False)
    (tmp_path / "runs" / "x").mkdir(parents=True)
    assert main(["train", "--config", "camvid/fcn_r18c_camvid_cpu.yaml", "--work-dir", "runs/x"]) == 2
    assert (tmp_path / "runs" / "x").is_dir()


def test_docs_short_caps_iterations_and_seeds(monkeypatch):
    from segattn.engine.config import load_config
    from segattn.engine.short import shorten_seeds

    monkeypatch.delenv("SEGATTN_DOCS_SHORT", raising=False)
    full = load_config("camvid/emanet_r18c_camvid_cpu.yaml")
    assert full.schedule.iters == 800 and shorten_seeds(5) == 5
    monkeypatch.setenv("SEGATTN_DOCS_SHORT", "1")
    short = load_config("camvid/emanet_r18c_camvid_cpu.yaml", ["schedule.iters=300"])
    assert (short.schedule.iters, short.schedule.warmup_iters, short.data.batch_size) == (2, 0, 2)
    assert short.eval.max_samples == 4 and shorten_seeds(5) == 2
    assert short.model == full.model  # only the length of the run changes
    monkeypatch.setenv("SEGATTN_DOCS_SHORT", "0")
    assert load_config("camvid/emanet_r18c_camvid_cpu.yaml").schedule.iters == 800


@pytest.mark.parametrize("name", ["camvid", "cityscapes", "nope"])
def test_data_download_refusals_in_the_cli_form(name, tmp_path, capsys):
    assert main(["data", "download", name, "--root", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segattn data: error: ") and "../" not in err[0], err
