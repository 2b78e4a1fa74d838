import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from segattn.cli import build_parser, main
from segattn.demo import QUICK

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
    assert main(["train", *TRAIN, "--work-dir", str(trained), "--resume", "auto", "--set", "schedule.iters=5",
                 "--allow-config-change"]) == 0  # a longer schedule is a config change: allowed explicitly
    records = [json.loads(x) for x in open(trained / "metrics.jsonl")]
    assert [r["iter"] for r in records if r["kind"] == "train"][-2:] == [4, 5]  # continued, not restarted


def test_demo_quick(tmp_path):
    assert main(["demo", "--quick", "--out", str(tmp_path), "--threads", "1"]) == 0
    report = json.load(open(tmp_path / "report.json"))
    assert [r["model"] for r in report["rows"]] == ["pspnet", "fcn"]
    assert "| pspnet |" in open(tmp_path / "report.md").read()
    assert Image.open(tmp_path / "predictions.png").size[0] > 100
    stamp = (tmp_path / "report.json").stat().st_mtime_ns
    assert main(["demo", "--quick", "--out", str(tmp_path), "--threads", "1"]) == 2  # an earlier report is kept
    assert (tmp_path / "report.json").stat().st_mtime_ns == stamp
    assert main(["demo", "--quick", "--out", str(tmp_path), "--threads", "1", "--overwrite"]) == 0
    assert (tmp_path / "report.json").stat().st_mtime_ns != stamp


def test_parser_knows_every_subcommand():
    parser = build_parser()
    for cmd in (["configs"], ["data", "download", "camvid", "--root", "x"], ["demo", "--quick"]):
        assert callable(parser.parse_args(cmd).func)
    assert main(["train"]) == 2  # --config is required unless resuming a work dir's stored config


def test_configs_subcommand(capsys):
    assert main(["configs", "camvid/*"]) == 0
    assert "camvid/fcn_r18c_camvid_cpu.yaml" in capsys.readouterr().out


@pytest.mark.distributed
@pytest.mark.parametrize("launch", [["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], []],
                         ids=["torchrun", "nproc"])
def test_two_processes(tmp_path, launch):
    """Two DDP processes under torchrun, and under `segattn train --nproc 2`, which starts them itself."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nproc = [] if launch else ["--nproc", "2"]
    cmd = [sys.executable, *launch, "-m", "segattn", "train", *TRAIN, "--work-dir", str(tmp_path), *nproc]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["world_size"] == 2 and summary["iteration"] == 4


@pytest.mark.distributed
def test_train_nproc_worker_failure_is_one_line(tmp_path):
    """A failure inside the workers: their own error lines, then one line naming the ranks, the
    workers' exit code, and no launcher traceback (torchrun prints one)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "segattn", "train", "--config", "camvid/compare_camvid.yaml", "--set",
           "schedule.iters=2", "--set", f"data.root={tmp_path / 'nowhere'}", "--work-dir", str(tmp_path / "w"),
           "--nproc", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr, proc.stderr[-3000:]
    lines = [x for x in proc.stderr.splitlines() if x.startswith("segattn train: error:")]
    assert "does not exist" in lines[0]
    assert lines[-1].startswith("segattn train: error: 2 of 2 worker(s) failed: rank 0") and "rank 1" in lines[-1]


def test_train_nproc_checks_before_starting(tmp_path, capsys):
    """A bad --nproc, a non-empty work dir or a wrong key fails here, before any worker starts."""
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    assert main(["train", *TRAIN, "--work-dir", str(tmp_path), "--nproc", "2"]) == 2
    assert "is not empty (metrics.jsonl)" in capsys.readouterr().err
    assert main(["train", *TRAIN, "--work-dir", str(tmp_path / "new"), "--nproc", "0"]) == 2
    assert "--nproc 0: expected the number of local processes" in capsys.readouterr().err
    assert main(["train", *TRAIN, "--work-dir", str(tmp_path / "new"), "--nproc", "2", "--set", "model.nme=x"]) == 2
    assert "model.nme" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


# ----- issue 12: every failure is one `segattn <cmd>: error: ...` line, exit 2, no traceback ------------------
def _bad_inputs(root, ckpt):
    """Broken, truncated and foreign checkpoints, a file where a folder belongs, images, a bad YAML."""
    import torch

    root.mkdir(parents=True, exist_ok=True)
    (root / "trunc.pt").write_bytes(ckpt.read_bytes()[:5000])
    (root / "text.pt").write_text("hello\n")
    torch.save({"weights": torch.zeros(3)}, root / "foreign.pt")
    torch.save({"conv.weight": torch.zeros(3)}, root / "statedict.pt")
    full = torch.load(ckpt, weights_only=True)
    torch.save({k: v for k, v in full.items() if k != "optimizer"}, root / "noopt.pt")
    (root / "afile").write_text("x")
    (root / "imgs").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(root / "imgs" / "a.png")
    (root / "broken").mkdir(exist_ok=True)
    (root / "broken" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "existing").mkdir(exist_ok=True)
    (root / "existing" / "a_mask.png").write_bytes(b"keep")
    (root / "bad.yaml").write_text("model: {name: fcn\nschedule:\n  iters: 3\n")
    (root / "bad.json").write_text('{"model": {"name": "fcn",}}')


NO_CUDA = not __import__("torch").cuda.is_available()
BAD_CALLS = [  # (id, argv with {t} = folder of bad inputs, {ckpt} = a good checkpoint, {ro} = read-only folder, must contain)
    ("eval-truncated-ckpt", "eval --checkpoint {t}/trunc.pt", "trunc.pt"),
    ("eval-text-file-ckpt", "eval --checkpoint {t}/text.pt", "text.pt"),
    ("eval-foreign-ckpt", "eval --checkpoint {t}/foreign.pt", "foreign.pt holds no config"),
    ("eval-other-weights", "eval --checkpoint {t}/statedict.pt --config synthetic/fcn_r18_synthetic.yaml",
     "statedict.pt does not fit model 'fcn'"),
    ("eval-missing-ckpt", "eval --checkpoint {t}/nope.pt", "nope.pt' does not exist"),
    ("eval-ckpt-is-empty-folder", "eval --checkpoint {t}", "no config.json in"),
    ("eval-out-under-a-file", "eval --checkpoint {ckpt} --out {t}/afile/m.json", "afile/m.json cannot be written"),
    ("eval-out-is-folder", "eval --checkpoint {ckpt} --out {t}", "is a folder, expected a file name"),
    ("eval-out-exists", "eval --checkpoint {ckpt} --out {t}/afile", "already exists; pass --overwrite"),
    ("eval-out-read-only", "eval --checkpoint {ckpt} --out {ro}/m.json", "cannot write"),
    ("eval-no-cuda", "eval --checkpoint {ckpt} --device cuda", "'cuda' is not available"),
    ("eval-unknown-device", "eval --checkpoint {ckpt} --device gpu", "unknown device 'gpu'"),
    ("predict-truncated-ckpt", "predict {t}/imgs --checkpoint {t}/trunc.pt --out {t}/p", "trunc.pt"),
    ("predict-foreign-ckpt", "predict {t}/imgs --checkpoint {t}/foreign.pt --out {t}/p",
     "foreign.pt is not a segattn training checkpoint"),
    ("predict-out-is-file", "predict {t}/imgs --checkpoint {ckpt} --out {t}/afile", "afile is not usable"),
    ("predict-out-read-only", "predict {t}/imgs --checkpoint {ckpt} --out {ro}", "cannot write"),
    ("predict-no-cuda", "predict {t}/imgs --checkpoint {ckpt} --out {t}/p --device cuda", "'cuda' is not available"),
    ("predict-missing-input", "predict {t}/nothing --checkpoint {ckpt} --out {t}/p", "nothing' is neither"),
    ("predict-outputs-exist", "predict {t}/imgs --checkpoint {ckpt} --out {t}/existing", "already exist"),
    ("predict-alpha", "predict {t}/imgs --checkpoint {ckpt} --out {t}/p --alpha 2", "--alpha must be in [0, 1]"),
    ("predict-strict", "predict {t}/broken --checkpoint {ckpt} --out {t}/p --strict", "b.png"),
    ("train-yaml-syntax", "train --config {t}/bad.yaml --work-dir {t}/w", "bad.yaml: YAML syntax error at line 2"),
    ("train-json-syntax", "train --config {t}/bad.json --work-dir {t}/w", "bad.json: JSON syntax error at line 1"),
    ("train-missing-config", "train --config {t}/none.yaml --work-dir {t}/w", "none.yaml' not found"),
    ("train-fp16-on-cpu", "train --config synthetic/fcn_r18_synthetic.yaml --work-dir {t}/w --set train.device=cpu "
     "--set train.amp=true --set train.amp_dtype=fp16", "train.amp_dtype=fp16 needs a CUDA device"),
    ("train-resume-truncated", "train --config synthetic/fcn_r18_synthetic.yaml --work-dir {t}/w --resume {t}/trunc.pt",
     "trunc.pt' is not a readable PyTorch file"),
    ("train-resume-no-optimizer", "train --config synthetic/fcn_r18_synthetic.yaml --work-dir {t}/w "
     "--resume {t}/noopt.pt", "noopt.pt cannot be resumed: it lacks 'optimizer'"),
    ("train-resume-state-dict", "train --config synthetic/fcn_r18_synthetic.yaml --work-dir {t}/w "
     "--resume {t}/statedict.pt", "statedict.pt cannot be resumed: it lacks 'model', 'optimizer'"),
    ("export-suffix-mismatch", "export --model fcn --num-classes 3 --format pt2 --out {t}/m.onnx",
     "--format pt2 writes a torch.export archive, whose file name must end in .pt2; got .onnx"),
    ("export-no-suffix", "export --model fcn --num-classes 3 --format onnx --out {t}/model",
     "must end in .onnx; got no suffix"),
    ("modules-no-match", "modules zzz*", "no registered module matches 'zzz*'"),
    ("configs-no-match", "configs zzz*", "no shipped config matches 'zzz*'"),
    ("demo-context-fcn", "demo --quick --context fcn --out {t}/p", "--context fcn: the demo compares"),
    ("demo-context-unknown", "demo --quick --context zzz --out {t}/p", "--context 'zzz' is not a registered model"),
    ("demo-threads-0", "demo --quick --threads 0 --out {t}/p", "--threads must be at least 1, got 0"),
    ("demo-iters-0", "demo --quick --iters 0 --out {t}/p", "--iters must be at least 1, got 0"),
    ("bench-cannot-fit", "bench nonlocal --size 16384 --batch 64", "needs about"),
    ("bench-unknown-baseline", "bench nonlocal --channels 8 --size 8 --rounds 1 --baseline zzz",
     "--baseline 'zzz' is not a registered module"),
    ("compare-threads-0", "compare all-modules --threads 0 --out {t}/p", "--threads must be >= 1, got 0"),
    ("bench-out-is-file", "bench nonlocal --channels 8 --size 8 --rounds 1 --out {t}/afile", "afile is not usable"),
    ("bench-out-read-only", "bench nonlocal --channels 8 --size 8 --rounds 1 --out {ro}/b", "cannot write"),
    ("bench-no-module", "bench zzz*", "no registered module"),
    ("bench-no-cuda", "bench nonlocal --device cuda", "'cuda' is not available"),
    ("demo-out-is-file", "demo --quick --out {t}/afile", "afile is not usable"),
    ("demo-out-read-only", "demo --quick --out {ro}", "cannot write"),
]


@pytest.mark.parametrize("argv,fragment", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_invocations_end_in_one_error_line(argv, fragment, trained, tmp_path, capsys, monkeypatch):
    from tests.readonly import read_only_dir

    if "cuda" in argv and not NO_CUDA:
        pytest.skip("CUDA is available here")
    monkeypatch.delenv("SEGATTN_DEBUG", raising=False)
    _bad_inputs(tmp_path / "t", trained / "best.pt")
    with read_only_dir(tmp_path / "ro", monkeypatch) as ro:
        args = argv.format(t=tmp_path / "t", ckpt=trained / "best.pt", ro=ro).split()
        code = main(args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    prefix = f"segattn {args[0]}: error: "
    assert code == 2, err
    assert "Traceback" not in err
    assert [ln for ln in lines if ": error:" in ln] == [lines[-1]], err  # exactly one error line, the last
    assert all(ln.startswith("segattn predict: warning:") for ln in lines[:-1]), err  # only warnings before it
    assert lines[-1].startswith(prefix) and fragment in lines[-1], lines[-1]
    assert not any((tmp_path / "t" / d).exists() for d in ("p", "w")), "nothing is created on failure"



def test_resume_from_checkpoint_of_another_model_or_optimiser_is_one_clear_line(trained, tmp_path, capsys):
    import torch

    full = torch.load(trained / "best.pt", weights_only=True)
    torch.save({**full, "model": {"w": torch.zeros(3)}}, tmp_path / "other_model.pt")
    torch.save({**full, "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "other_optim.pt")
    base = ["train", *TRAIN, "--allow-config-change"]
    assert main(["eval", "--checkpoint", str(tmp_path / "other_model.pt")]) == 2
    said_by_eval = capsys.readouterr().err.strip()
    assert main([*base, "--work-dir", str(tmp_path / "w1"), "--resume", str(tmp_path / "other_model.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "other_model.pt does not fit model 'fcn'" in err and "1 unexpected (e.g. w)" in err, err
    assert err.split("error: ")[1] == said_by_eval.split("error: ")[1]  # as good as eval's, word for word
    assert main([*base, "--work-dir", str(tmp_path / "w2"), "--resume", str(tmp_path / "other_optim.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "other_optim.pt: its 'optimizer' state does not fit this run" in err and "Traceback" not in err, err

def test_unreadable_inputs_skipped_and_counted(trained, tmp_path, capsys):
    _bad_inputs(tmp_path, trained / "best.pt")
    (tmp_path / "imgs" / "b.png").write_bytes(b"broken")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "imgs"), "--checkpoint", str(trained / "best.pt"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "segattn predict: warning: skipped" in err and "b.png" in err
    assert "1 image(s)" in err and "1 unreadable input(s) skipped" in err
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "a_overlay.png"]
    assert main(["predict", str(tmp_path / "broken"), "--checkpoint", str(trained / "best.pt"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("segattn predict: error: no input could be read")


def test_predict_shared_stems_reports_what_it_wrote(trained, tmp_path, capsys):
    for folder, ext in (("x", "png"), ("x", "jpg"), ("y", "png")):
        (tmp_path / folder).mkdir(exist_ok=True)
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / folder / f"a.{ext}")
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "x"), str(tmp_path / "y"), "--checkpoint", str(trained / "best.pt"), "--out", str(out)]
    assert main(argv) == 0
    assert "3 image(s)" in capsys.readouterr().err
    assert len(list(out.glob("*_mask.png"))) == 3 and len(list(out.glob("*_overlay.png"))) == 3
    assert main(argv) == 2  # a second run does not overwrite silently
    assert main([*argv, "--overwrite"]) == 0


def test_eval_out_is_atomic_json_and_max_samples_counts_images(trained, tmp_path):
    out = tmp_path / "m.json"
    assert main(["eval", "--checkpoint", str(trained / "last.pt"), "--out", str(out), "--set", "eval.max_samples=3"]) == 0
    assert json.load(open(out))["samples"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]  # no temporary left beside it


def test_unexpected_errors_and_interrupts_are_one_line(monkeypatch, capsys):
    import segattn.engine.predict as predict_mod

    def boom(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("deep inside\nsecond line")

    monkeypatch.setattr(predict_mod, "predict", boom)
    argv = ["predict", "x.png", "--checkpoint", "c.pt", "--out", "o"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("segattn predict: error: RuntimeError: deep inside second line")

    def interrupted(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(predict_mod, "predict", interrupted)
    assert main(argv) == 130
    assert capsys.readouterr().err == "segattn predict: error: interrupted\n"
    monkeypatch.setenv("SEGATTN_DEBUG", "1")
    monkeypatch.setattr(predict_mod, "predict", boom)
    with pytest.raises(RuntimeError, match="deep inside"):
        main(argv)


def test_segattn_warnings_are_one_line_and_other_libraries_keep_their_format():
    """A warning issued from segattn's code (such as SGR without a knowledge graph) is one
    ``segattn <cmd>: warning:`` line, with no source line; one from outside keeps Python's format."""
    import warnings

    import segattn.cli as cli
    import segattn.modules.sgr as sgr

    fmt = cli._warning_format("segattn x", warnings.formatwarning)
    assert fmt("no graph", UserWarning, sgr.__file__, 275, "warnings.warn(") == "segattn x: warning: no graph\n"
    other = "/usr/lib/python3/site-packages/torch/nn/x.py"
    assert fmt("elsewhere", UserWarning, other, 3, "").startswith(f"{other}:3: UserWarning: elsewhere")
