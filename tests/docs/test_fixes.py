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
    assert short.eval.max_samples == 4 and shorten_seeds(5) == 1
    from segattn.engine.short import shorten_images

    assert shorten_images(100) == 4
    assert short.model == full.model  # only the length of the run changes
    monkeypatch.setenv("SEGATTN_DOCS_SHORT", "0")
    assert load_config("camvid/emanet_r18c_camvid_cpu.yaml").schedule.iters == 800


@pytest.mark.parametrize("name", ["camvid", "cityscapes", "nope"])
def test_data_download_refusals_in_the_cli_form(name, tmp_path, capsys):
    assert main(["data", "download", name, "--root", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segattn data: error: ") and "../" not in err[0], err


@pytest.fixture(scope="module")
def tiny_ccnet(tmp_path_factory):
    from tests.viz.conftest import save_tiny

    return save_tiny(tmp_path_factory.mktemp("models") / "ccnet", "ccnet")


@pytest.mark.parametrize("dataset, raw_values", [("camvid", (0, 1, 11)), ("ade20k", (0, 1, 2, 3))])
def test_viz_labels_are_read_as_the_dataset_reads_them(dataset, raw_values, tiny_ccnet, tmp_path, capsys):
    """CamVid's void is 11 and ADE20K's "other" is 0 (others shifted down): `viz --labels` used to take the
    raw values as class ids and refuse the masks the dataset readers accept."""
    import numpy as np
    from PIL import Image

    from tests.viz.conftest import scene

    (tmp_path / "labels").mkdir()
    img = scene()
    Image.fromarray(img).save(tmp_path / "scene0.png")
    mask = np.zeros(img.shape[:2], np.uint8)
    for i, v in enumerate(raw_values):
        mask[i * 10:(i + 1) * 10] = v
    Image.fromarray(mask).save(tmp_path / "labels" / "scene0.png")
    args = ["viz", str(tmp_path / "scene0.png"), "--checkpoint", tiny_ccnet, "--labels", str(tmp_path / "labels"),
            "--no-page"]
    assert main([*args, "--out", str(tmp_path / "raw")]) == 2  # the saved model's own dataset: synthetic
    assert f"[{raw_values[-1]}]" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "mapped"), "--dataset", dataset]) == 0, capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "x"), "--dataset", "camvidd"]) == 2
    assert "camvid" in capsys.readouterr().err  # an unknown name: close matches


def test_mask_reader_follows_the_dataset_keywords():
    import numpy as np

    from segattn.data import mask_reader

    raw = np.array([0, 1, 7, 11, 26])
    assert mask_reader("camvid").map_labels(raw).tolist() == [0, 1, 7, 255, 26]
    assert mask_reader("ade20k").map_labels(raw).tolist() == [255, 0, 6, 10, 25]
    assert mask_reader("ade20k", reduce_zero_label=False).map_labels(raw).tolist() == [0, 1, 7, 11, 26]
    assert mask_reader("cityscapes").map_labels(raw).tolist() == [255, 255, 0, 2, 13]
    assert mask_reader("cityscapes", label_type="labelTrainIds").map_labels(raw).tolist() == [0, 1, 7, 11, 26]
    assert mask_reader("synthetic").map_labels(raw).tolist() == [0, 1, 7, 11, 26]
