"""``segattn export`` / ``segattn models`` / ``segattn --version`` from the command line (in-process)."""

from __future__ import annotations

import pytest

import segattn
from segattn.cli import main


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"segattn {segattn.__version__}"


def test_export_onnx_from_a_model_name(tmp_path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "fcn.onnx"
    args = ["export", "--model", "fcn", "--num-classes", "3", "--kw", 'backbone="resnet18"', "--kw", "channels=8",
            "--size", "32x40", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "onnx opset 20, fixed 32x40, verified on ONNX Runtime" in printed
    assert "32x40: max |diff|" in printed and "- ok" in printed
    assert main(args) == 2  # exists: refused before any work
    assert "already exists; pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--model", "fcn", "--checkpoint", "x.pt"], "exactly one of --checkpoint"),
    (["--model", "fcnn"], "fcnn"),
    (["--model", "fcn", "--size", "big"], "HxW"),
    (["--model", "fcn", "--format", "pt2", "--opset", "20"], "ONNX exports only"),
    (["--checkpoint", "missing/last.pt"], "missing/last.pt"),
    (["--checkpoint", "x.pt", "--format", "hub", "--dynamic"], "apply to --format onnx|pt2 only"),
])
def test_export_errors_are_one_line(tmp_path, capsys, args, message) -> None:
    out = tmp_path / ("o.pt2" if "pt2" in args else "o.onnx")  # the suffix fits the format: not what is tested
    assert main(["export", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("segattn export: error:") and message in err and len(err.splitlines()) == 1


def test_models_lists_and_describes(capsys) -> None:
    assert main(["models", "psp*"]) == 0
    out = capsys.readouterr().out
    assert "pspnet" in out and "ppm" in out and "fcn " not in out
    assert main(["models", "--info", "pspnet", "--size", "64x64"]) == 0
    out = capsys.readouterr().out
    assert "Zhao, Shi, Qi, Wang, Jia, CVPR 2017" in out and "at 64x64" in out
    assert "segattn train --config camvid/pspnet_r18c_camvid_cpu.yaml" in out


@pytest.mark.parametrize("args, message", [  # each was ignored, or failed after the model was built
    (["--checkpoint", "CKPT", "--kw", "channels=8"], "--kw applies to --model only; --checkpoint"),
    (["--checkpoint", "CKPT", "--num-classes", "3"], "--num-classes applies to --model only"),
    (["--checkpoint", "CKPT", "--format", "hub", "--kw", "channels=8"], "--kw applies to --model only"),
    (["--model", "fcn", "--pooling", "refuse"], "--pooling refuse applies with --dynamic only"),
    (["--checkpoint", "CKPT", "--format", "hub", "--out", "HUB"], "output HUB already exists; pass --overwrite"),
    (["--model", "fcn", "--kw", 'backbone="resnet18"', "--kw", "channels=8", "--size", "999999x999999"],
     "--size 999999x999999: the model needs more memory at this size than there is here"),
])
def test_export_options_that_cannot_apply_are_refused(tmp_path, capsys, args, message) -> None:
    torch = pytest.importorskip("torch")
    ckpt, hub = tmp_path / "last.pt", tmp_path / "hub"
    torch.save({}, ckpt)  # refused before it is read
    hub.mkdir()
    (hub / "config.json").write_text("{}")
    args = [str(ckpt) if a == "CKPT" else str(hub) if a == "HUB" else a for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "o.onnx")]
    assert main(["export", *args, *out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("segattn export: error:") and len(err.splitlines()) == 1
    assert message.replace("HUB", str(hub)) in err, err


@pytest.mark.parametrize("args, message", [  # each printed a bare header or ignored an option (exit 0)
    (["zzz"], "no registered model matches 'zzz'; `segattn models` lists them all"),
    (["--size", "64x64"], "--size sets the size of --info's MACs figure: use it with --info NAME"),
    (["--zoo", "--info", "fcn"], "--info fcn describes one model: give it without --zoo"),
    (["psp*", "--info", "fcn"], "--info fcn describes one model: give it without a pattern"),
    (["--info", "FILE"], "FILE is a file; --info reads a model name or a save_pretrained folder"),
])
def test_models_refuses_what_it_would_ignore(tmp_path, capsys, args, message) -> None:
    file = tmp_path / "last.pt"
    file.write_bytes(b"")
    assert main(["models", *[str(file) if a == "FILE" else a for a in args]]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.startswith("segattn models: error:") and len(cap.err.splitlines()) == 1
    assert message.replace("FILE", str(file)) in cap.err, cap.err
