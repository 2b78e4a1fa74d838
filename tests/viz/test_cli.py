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
