"""CLI hints and limits of issue 33: closed pipes, negative values, tolerances, bench time limit, the
data-root hint, eval of a Hub folder on a default dataset, a config without keys."""

import io
import os
import subprocess
import sys

import pytest

import segattn
from segattn.cli import EXIT_BROKEN_PIPE, build_parser, join_negative_values, main


class _ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("argv", [["models"], ["modules"], ["configs"]])
def test_closed_pipe_ends_quietly(argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(argv) == EXIT_BROKEN_PIPE
    assert capsys.readouterr().err == ""


def test_closed_pipe_in_a_real_process_prints_nothing():
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written, as after `| head` has quit
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-m", "segattn", "models", "--zoo"], stdout=write,
                          stderr=subprocess.PIPE, env=env, timeout=300)
    os.close(write)
    assert proc.returncode == EXIT_BROKEN_PIPE
    assert proc.stderr.decode() == ""


def test_negative_values_reach_the_options_parser():
    parser = build_parser()
    argv = ["viz", "img.png", "--checkpoint", "c.pt", "--out", "o", "--query", "-1,5", "--query", "3,4"]
    args = parser.parse_args(join_negative_values(parser, argv))
    assert args.query == [(-1, 5), (3, 4)]
    assert join_negative_values(parser, ["export", "--size", "-5x3"]) == ["export", "--size=-5x3"]
    assert join_negative_values(parser, ["bench", "--backward", "-1"]) == ["bench", "--backward", "-1"]


def test_viz_negative_query_is_a_range_error():
    from segattn.viz.weights import check_query

    with pytest.raises(ValueError, match=r"query pixel \(y=-1, x=5\) is outside the 32x32 image"):
        check_query((-1, 5), (32, 32), "image")


def test_export_negative_size_reaches_the_size_check(tmp_path, capsys):
    assert main(["export", "--model", "fcn", "--size", "-5x3", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "size must look like HxW with two integers >= 8" in err and "expected one argument" not in err


@pytest.mark.parametrize("flag,value", [("--atol", "-1"), ("--rtol", "nan"), ("--atol", "x")])
def test_export_tolerances_are_checked_up_front(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", "--model", "fcn", flag, value, "--out", str(tmp_path / "m.onnx")])
    assert info.value.code == 2
    assert f"argument {flag}: expected a finite number >= 0, got '{value}'" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_export_api_checks_tolerances(tmp_path):
    model = segattn.create_model("fcn", 2, backbone="resnet18", channels=8, aux=False)
    with pytest.raises(segattn.errors.ArgumentError, match=r"export: atol must be a finite number >= 0, got -1"):
        segattn.export(model, tmp_path / "m.onnx", atol=-1)


def test_bench_refuses_a_run_estimated_above_the_limit(monkeypatch, capsys):
    import segattn.bench.cli as bench_cli

    monkeypatch.setattr(bench_cli, "_fitting", lambda names, setting, memory_only: (names, {}, 39 * 3600.0))

    def reached(*args, **kwargs):
        raise segattn.errors.SegattnError("timing started")

    monkeypatch.setattr(bench_cli, "time_modules", reached)
    assert main(["bench", "nonlocal", "--size", "4096x4096"]) == 2
    err = capsys.readouterr().err
    assert "estimated at 39.0 h, above the 60 min limit; pass --force" in err
    assert main(["bench", "nonlocal", "--size", "4096x4096", "--force"]) == 2
    assert "timing started" in capsys.readouterr().err


def test_missing_data_root_hint_names_the_set_option(tmp_path, monkeypatch):
    from segattn.data import default_root

    monkeypatch.delenv("SEGATTN_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        default_root("camvid")
    assert "--set data.root=DIR" in str(info.value) and "--root DIR" not in str(info.value)


def test_config_without_keys_names_crop_size(tmp_path, capsys):
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("{}\n")
    assert main(["train", "--config", str(cfg), "--work-dir", str(tmp_path / "w"), "--set", "train.progress=false"]) == 2
    err = capsys.readouterr().err
    assert "data.crop_size is not set" in err and "stack expects" not in err


def test_eval_of_a_hub_folder_on_a_default_dataset_says_so(tmp_path, capsys):
    model = segattn.create_model("fcn", 3, backbone="resnet18", channels=8, aux=False)
    folder = model.save_pretrained(tmp_path / "hub")
    assert main(["eval", "--checkpoint", str(folder), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "has 3 classes but the default dataset 'synthetic' (no config names one) has 5" in err
    assert "--set data.dataset=NAME" in err
