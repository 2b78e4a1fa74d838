"""``segattn viz``: files written for a saved model, and one clear error line for bad input."""

from __future__ import annotations

import os

import pytest

from segattn.cli import main


def run(args, capsys):
    rc = main(["viz", *args])
    return rc, capsys.readouterr()


def test_writes_pictures_and_page(tiny_models, images, tmp_path, capsys):
    out = tmp_path / "viz"
    rc, cap = run([str(images / "scene0.png"), "--checkpoint", tiny_models["ccnet"], "--out", str(out),
                   "--labels", str(images / "labels"), "--query", "40,20"], capsys)
    assert rc == 0, cap.err
    names = sorted(os.listdir(out))
    assert "report.html" in names and "scene0_predictions.png" in names
    assert any("where_a_pixel_looks" in n for n in names)
    page = (out / "report.html").read_text()
    assert "ccnet: R=2" in page and "errors (pixel acc" not in page  # caption is inside the picture
    assert page.count("data:image/png;base64,") >= 3 and "http" not in page.split("<script>")[0].lower()
    # nothing is overwritten without being asked
    rc, cap = run([str(images / "scene0.png"), "--checkpoint", tiny_models["ccnet"], "--out", str(out)], capsys)
    assert rc == 2 and "pass --force" in cap.err and cap.err.count("\n") == 1


@pytest.mark.parametrize("case, pattern", [
    ("query", "query pixel (y=500, x=3) is outside the 64x96 image scene0.png"),
    ("fcn", "has no context module"),
    ("deeplabv3", "have no attention weights to show"),
    ("missing", "neither an image file nor a folder"),
])
def test_bad_input_is_one_line(case, pattern, tiny_models, images, tmp_path, capsys):
    img = str(images / ("nothing.png" if case == "missing" else "scene0.png"))
    model = tiny_models["ccnet" if case in ("query", "missing") else case]
    extra = ["--query", "500,3"] if case == "query" else []
    rc, cap = run([img, "--checkpoint", model, "--out", str(tmp_path / "o"), *extra], capsys)
    assert rc == 2
    assert cap.err.startswith("segattn viz: error: ") and cap.err.count("\n") == 1, cap.err
    assert pattern in cap.err
    assert not (tmp_path / "o" / "report.html").exists()


@pytest.fixture
def odd_inputs(images, tmp_path):
    """A 16-bit PNG, a float TIFF, a label of another size and one with a value outside the classes."""
    import numpy as np
    from PIL import Image

    grey16 = (np.arange(64 * 96).reshape(64, 96) * 10).astype(np.uint16)  # 0..61430: mostly far above 255
    Image.fromarray(grey16).save(tmp_path / "deep.png")
    Image.fromarray(np.full((64, 96), 0.5, np.float32)).save(tmp_path / "float.tif")
    labels = tmp_path / "labels"
    labels.mkdir()
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(labels / "scene0.png")  # half the image's size
    Image.fromarray(np.full((64, 96), 7, np.uint8)).save(labels / "scene1.png")  # 7: not one of 3 classes
    return tmp_path


def test_images_are_read_as_predict_reads_them(tiny_models, odd_inputs, tmp_path, capsys, monkeypatch):
    import numpy as np

    import segattn.viz.run as viz_run
    from segattn.data.datasets.base import load_image

    seen = []
    monkeypatch.setattr(viz_run, "visualize", lambda model, items, *a, **k: seen.extend(items) or [])
    rc, cap = run([str(odd_inputs / "deep.png"), "--checkpoint", tiny_models["ccnet"], "--out", str(tmp_path / "o")],
                  capsys)
    assert rc == 0, cap.err
    expected = load_image(str(odd_inputs / "deep.png"))  # predict's loader: 16 bits scaled, not clipped to white
    assert seen[0].image.shape == expected.shape and np.array_equal(seen[0].image, expected)
    assert (seen[0].image < 255).mean() > 0.9


@pytest.mark.parametrize("case, pattern", [
    ("float", "holds floating-point pixels (mode F)"),
    ("size", "size mismatch: image"),
    ("value", "holds label value(s) [7] outside the 3 classes"),
    ("max-images", "--max-images must be at least 1, got 0"),
])
def test_odd_images_and_labels_are_refused_like_predict(case, pattern, tiny_models, images, odd_inputs, tmp_path,
                                                        capsys):
    image = {"float": odd_inputs / "float.tif", "value": images / "scene1.png"}.get(case, images / "scene0.png")
    extra = {"size": ["--labels", str(odd_inputs / "labels")], "value": ["--labels", str(odd_inputs / "labels")],
             "max-images": ["--max-images", "0"]}.get(case, [])
    rc, cap = run([str(image), "--checkpoint", tiny_models["ccnet"], "--out", str(tmp_path / "o"), *extra], capsys)
    assert rc == 2
    assert cap.err.startswith("segattn viz: error: ") and cap.err.count("\n") == 1, cap.err
    assert pattern in cap.err, cap.err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, pattern", [  # each was accepted (or failed after the model ran)
    (["--bases", "0"], "--bases must be at least 1 (EMA bases / low-rank nodes shown), got 0"),
    (["--dataset", "camvdi"], "--dataset 'camvdi' is not a registered dataset; expected one of ade20k, camvid"),
    (["--labels", "OTHER"], "no mask has the file name of an image (scene0.png); masks are matched to the images"),
    (["--out", "FILE"], "--out FILE is not usable: it is a file, not a folder"),
])
def test_options_that_would_be_ignored_are_refused(extra, pattern, tiny_models, images, tmp_path, capsys):
    from PIL import Image

    other, file = tmp_path / "other.png", tmp_path / "FILE"
    Image.new("L", (96, 64)).save(other)
    file.write_text("")
    extra = [str(other) if a == "OTHER" else str(file) if a == "FILE" else a for a in extra]
    rc, cap = run([str(images / "scene0.png"), "--checkpoint", tiny_models["ccnet"], "--out", str(tmp_path / "o"),
                   *extra], capsys)
    assert rc == 2
    assert cap.err.startswith("segattn viz: error: ") and cap.err.count("\n") == 1, cap.err
    assert pattern.replace("FILE", str(file)) in cap.err, cap.err
    assert not (tmp_path / "o").exists()
