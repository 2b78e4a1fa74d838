"""segattn.engine.predict: distinct output names, unreadable inputs skipped and counted, no silent
overwrite, atomic outputs, 16-bit inputs read at full range (issue 12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segattn
from segattn.data.palette import bit_palette
from segattn.engine.config import config_from_dict
from segattn.engine.predict import output_names, predict_files
from segattn.errors import SegattnError
from tests.data.fakes import write_png16


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = segattn.create_model("fcn", num_classes=3, backbone="resnet18", channels=8).eval()
    cfg = config_from_dict({"data": {"transforms": False}})
    return model, cfg, {"num_classes": 3, "palette": bit_palette(3)}


def _img(path: Path, seed: int = 0, size=(20, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_output_names_are_distinct():
    paths = [Path("x/a.png"), Path("x/a.jpg"), Path("y/a.png"), Path("x/b.png"), Path("x/a_png.bmp"), Path("x/B.PNG")]
    names = output_names(paths)
    assert names == ["a_png", "a_jpg", "a_png_2", "b_png", "a_png_3", "B_png_2"]
    assert len({n.lower() for n in names}) == len(names)
    assert output_names([Path("a.png"), Path("c.jpg")]) == ["a", "c"]  # no collision: names unchanged


def test_shared_stems_write_one_result_each_and_the_count_matches(setup, tmp_path, capsys):
    model, cfg, meta = setup
    inputs = [_img(tmp_path / "in1" / "a.png", 0), _img(tmp_path / "in1" / "a.jpg", 1), _img(tmp_path / "in2" / "a.png", 2)]
    out = tmp_path / "out"
    result = predict_files(model, cfg, meta, [str(tmp_path / "in1"), str(inputs[2]), str(inputs[0])], str(out))
    masks = sorted(p.name for p in out.glob("*_mask.png"))
    assert len(result.written) == len(masks) == 3 and not result.skipped  # in1/a.png given twice counts once
    assert len({w["mask"] for w in result.written}) == 3
    assert sorted(p.name for p in out.iterdir()) == sorted(masks + [m.replace("_mask", "_overlay") for m in masks])


def test_unreadable_inputs_are_skipped_with_a_warning_or_stop_with_strict(setup, tmp_path, capsys):
    model, cfg, meta = setup
    _img(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    result = predict_files(model, cfg, meta, [str(tmp_path / "in")], str(tmp_path / "out"))
    assert [Path(w["image"]).name for w in result.written] == ["good.png"]
    assert [Path(p).name for p, _ in result.skipped] == ["broken.png"]
    err = capsys.readouterr().err
    assert "warning: skipped" in err and "broken.png" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_mask.png", "good_overlay.png"]
    with pytest.raises(SegattnError, match=r"broken\.png.*--strict"):
        predict_files(model, cfg, meta, [str(tmp_path / "in")], str(tmp_path / "out2"), strict=True)


def test_existing_outputs_are_not_overwritten_unless_asked(setup, tmp_path):
    model, cfg, meta = setup
    img = _img(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_mask.png").write_bytes(b"keep me")
    with pytest.raises(SegattnError, match=r"1 output file\(s\) already exist.*a_mask\.png.*--overwrite"):
        predict_files(model, cfg, meta, [str(img)], str(out))
    assert (out / "a_mask.png").read_bytes() == b"keep me"
    predict_files(model, cfg, meta, [str(img)], str(out), overwrite=True)
    assert Image.open(out / "a_mask.png").mode == "P"


def test_outputs_are_written_atomically(setup, tmp_path, monkeypatch):
    model, cfg, meta = setup
    img = _img(tmp_path / "a.png")

    def torn_save(self, fp, format=None, **kw):  # noqa: A002, ANN001, ANN003
        fp.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        predict_files(model, cfg, meta, [str(img)], str(tmp_path / "out"))
    assert list((tmp_path / "out").iterdir()) == []  # no torn file, no temporary left


def test_16bit_input_is_read_at_full_range(setup, tmp_path):
    model, cfg, meta = setup
    ramp = (np.arange(16 * 16).reshape(16, 16) * 256).astype(np.uint16)
    path = write_png16(tmp_path / "g16.png", ramp)
    result = predict_files(model, cfg, meta, [str(path)], str(tmp_path / "out"), alpha=0.0)
    seen = np.asarray(Image.open(result.written[0]["overlay"]))  # alpha 0: the decoded image itself
    np.testing.assert_array_equal(seen[..., 0], np.rint(ramp * 255.0 / 65535.0).astype(np.uint8))
    assert (seen == 255).mean() < 0.05
