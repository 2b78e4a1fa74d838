"""``segattn models --zoo FILTER --plot FILE``."""

from __future__ import annotations

import os
import sys

import pytest

from segattn.cli import main
from segattn.viz import zoo_plot
from segattn.viz.zoo_plot import backbone_family


@pytest.mark.parametrize("ext,magic", [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_cli_plot_writes_the_picture(tmp_path, capsys, ext, magic) -> None:
    out = tmp_path / f"zoo{ext}"
    assert main(["models", "--zoo", "emanet", "--plot", str(out)]) == 0
    assert out.read_bytes().startswith(magic)
    assert "(2 Cityscapes 512x1024 / ADE20K checkpoints" in capsys.readouterr().out  # 769x769 ones left out
    assert not [p for p in os.listdir(tmp_path) if p != out.name]  # no temporary file left behind
    if ext == ".svg":
        assert "Pareto front" in out.read_text()


def test_cli_plot_is_atomic_and_does_not_overwrite(tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "zoo.png"
    out.write_bytes(b"old")
    assert main(["models", "--zoo", "emanet", "--plot", str(out)]) == 2
    assert out.read_bytes() == b"old" and "already exists; pass --overwrite" in capsys.readouterr().err

    def broken_savefig(self, *args, **kwargs):  # the picture fails half-way: the old file stays whole
        raise RuntimeError("disk full")

    import matplotlib.figure

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    assert main(["models", "--zoo", "emanet", "--plot", str(out), "--overwrite"]) == 2
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["zoo.png"]


def test_cli_plot_refusals_are_one_line(tmp_path, capsys, monkeypatch) -> None:
    cases = [
        (["--zoo", "emanet", "--plot", str(tmp_path / "zoo.jpg")], "unknown picture format '.jpg'; expected a .png or .svg"),
        (["--plot", str(tmp_path / "zoo.png")], "--plot draws the zoo: use it with --zoo"),
        (["--zoo", "voc", "--plot", str(tmp_path / "zoo.png")], "nothing to plot: no Cityscapes 512x1024 or ADE20K"),
    ]
    cases.append((["--zoo", "emanet", "--plot", str(tmp_path / "zoo.png")],
                  "--plot needs matplotlib, which is not installed: pip install 'segattn[viz]'"))
    for i, (args, message) in enumerate(cases):
        if i == len(cases) - 1:
            monkeypatch.setitem(sys.modules, "matplotlib", None)  # not installed
        assert main(["models", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert os.listdir(tmp_path) == []


def test_backbone_family() -> None:
    assert [backbone_family(b) for b in ("R-101b-D16-MG124", "R-50-D8", "R-18b-D8", "HRNetV2p-W18-Small")] == \
        ["R-101", "R-50", "R-18", "HRNetV2p-W18-Small"]
    assert set(zoo_plot.MARKERS) >= {"R-18", "R-50", "R-101", "HRNetV2p-W48"}
