import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from segattn.cli import build_parser, main
from segattn.engine.demo import QUICK

TRAIN = ["--config", "synthetic/fcn_r18_synthetic.yaml"] + [a for s in QUICK for a in ("--set", s)] + [
    "--set", "train.progress=false", "--set", "train.threads=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("run")
    assert main(["train", *TRAIN, "--work-dir", str(work)]) == 0
    return work


def test_modules_subcommand_kept(capsys):
    assert main(["modules"]) == 0
    assert "family" in capsys.readouterr().out


def test_train_writes_checkpoints_and_logs(trained):
    assert (trained / "last.pt").is_file() and (trained / "best.pt").is_file()
    records = [json.loads(x) for x in open(trained / "metrics.jsonl")]
    assert [r["iter"] for r in records if r["kind"] == "train"] == [2, 4]
    assert json.load(open(trained / "config.json"))["schedule"]["iters"] == 4


def test_eval_subcommand(trained, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["eval", "--checkpoint", str(trained / "last.pt"), "--out", str(out), "--set", "eval.flip=true"]) == 0
    m = json.load(open(out))
    assert 0 <= m["mIoU"] <= 1 and set(m["IoU"]) >= {"background"} and m["eval"]["flip"] is True
    assert "mIoU" in capsys.readouterr().out


def test_predict_subcommand(trained, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a", (32, 32)), ("b", (40, 24))):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    out = tmp_path / "pred"
    assert main(["predict", str(folder), "--checkpoint", str(trained / "best.pt"), "--out", str(out)]) == 0
    mask = Image.open(out / "b_mask.png")
    assert mask.mode == "P" and mask.size == (24, 40)
    assert np.asarray(mask).max() < 5
    overlay = Image.open(out / "b_overlay.png")
    assert overlay.mode == "RGB" and overlay.size == (24, 40)
    missing = tmp_path / "missing"
    assert main(["predict", str(missing), "--checkpoint", str(trained / "best.pt"), "--out", str(out)]) == 2
    assert "segattn predict: error:" in capsys.readouterr().err
    monkeypatch.setenv("SEGATTN_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="missing"):
        main(["predict", str(missing), "--checkpoint", str(trained / "best.pt"), "--out", str(out)])


def test_resume_flag_continues(trained, tmp_path):
    assert main(["train", *TRAIN, "--work-dir", str(trained), "--resume", "auto", "--set", "schedule.iters=5"]) == 0
    records = [json.loads(x) for x in open(trained / "metrics.jsonl")]
    assert [r["iter"] for r in records if r["kind"] == "train"][-2:] == [4, 5]  # continued, not restarted


def test_demo_quick(tmp_path):
    assert main(["demo", "--quick", "--out", str(tmp_path), "--threads", "1"]) == 0
    report = json.load(open(tmp_path / "report.json"))
    assert [r["model"] for r in report["rows"]] == ["pspnet", "fcn"]
    assert "| pspnet |" in open(tmp_path / "report.md").read()
    assert Image.open(tmp_path / "predictions.png").size[0] > 100


def test_parser_knows_every_subcommand():
    parser = build_parser()
    for cmd in (["configs"], ["data", "download", "camvid", "--root", "x"], ["demo", "--quick"]):
        assert callable(parser.parse_args(cmd).func)
    with pytest.raises(SystemExit):
        parser.parse_args(["train"])  # --config is required


def test_configs_subcommand(capsys):
    assert main(["configs", "camvid/*"]) == 0
    assert "camvid/fcn_r18c_camvid_cpu.yaml" in capsys.readouterr().out


@pytest.mark.distributed
def test_torchrun_two_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "segattn", "train", *TRAIN, "--work-dir", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["world_size"] == 2 and summary["iteration"] == 4
