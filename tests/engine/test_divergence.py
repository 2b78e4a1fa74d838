"""A diverging run stops with a clear error; non-finite weights never reach a checkpoint."""

import json
import os
from types import SimpleNamespace

import pytest
import torch

from segattn.cli import main
from segattn.engine.train import Trainer, TrainingDiverged, train
from segattn.engine.workdir import LOCK_NAME
from tests.engine.standins import TinySeg, ToyDataset, tiny_config
from tests.test_cli import TRAIN


class NaNAt(ToyDataset):
    """ToyDataset whose sample ``bad`` holds one NaN pixel."""

    def __init__(self, bad, **kw):
        super().__init__(**kw)
        self.bad = bad

    def __getitem__(self, i):
        img, mask = super().__getitem__(i)
        if i == self.bad:
            img = img.clone()
            img[0, 0, 0] = float("nan")
        return img, mask


def _finite(path):
    state = torch.load(path, weights_only=True)["model"]
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def test_huge_learning_rate_stops_with_error_and_no_nan_best(tmp_path):
    cfg = tiny_config(str(tmp_path), optim={"lr": 1e12}, schedule={"iters": 30, "warmup_iters": 0},
                      train={"eval_interval": 1, "ckpt_interval": 1})
    with pytest.raises(TrainingDiverged, match=r"training diverged at iteration \d+: the loss is (nan|inf)") as err:
        train(cfg, model=TinySeg(), train_set=ToyDataset(8), val_set=ToyDataset(4, seed=1, augment=False))
    assert "optim.lr" in str(err.value)
    last = json.loads(open(tmp_path / "metrics.jsonl").readlines()[-1])
    assert last["kind"] == "error" and last["error"] == "diverged"  # the log says how the run ended
    for name in ("best.pt", "last.pt"):
        if os.path.exists(tmp_path / name):
            assert _finite(tmp_path / name), name
    assert not (tmp_path / LOCK_NAME).exists()


def test_one_nan_pixel_stops_before_the_weights_change(tmp_path):
    cfg = tiny_config(str(tmp_path), data={"batch_size": 1}, schedule={"iters": 6, "warmup_iters": 0},
                      train={"ckpt_interval": 1})
    model = TinySeg()
    with pytest.raises(TrainingDiverged, match="iteration"):
        train(cfg, model=model, train_set=NaNAt(2, n=4, augment=False), val_set=None)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())  # stopped before the step
    assert _finite(tmp_path / "last.pt")


def test_non_finite_weights_are_never_saved(tmp_path):
    trainer = Trainer(tiny_config(str(tmp_path)), model=TinySeg(), train_set=ToyDataset(8))
    trainer.info = SimpleNamespace(distributed=False, is_main=True, rank=0, world_size=1)
    trainer.model = trainer._model_in
    with torch.no_grad():
        trainer.model.cls.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match=r"cls.weight.*best.pt was not written"):
        trainer.save("best.pt")
    assert not (tmp_path / "best.pt").exists()


def test_grad_scaler_tolerance_counts_consecutive_non_finite_losses(tmp_path):
    trainer = Trainer(tiny_config(str(tmp_path), train={"nonfinite_tolerance": 2}))
    trainer.info = SimpleNamespace(distributed=False)
    nan = {"loss": torch.tensor(float("nan")), "loss_out": torch.tensor(float("nan"))}
    ok = {"loss": torch.tensor(1.0)}
    trainer.scaler = SimpleNamespace(is_enabled=lambda: True)  # fp16 AMP: the scaler skips those steps
    for terms in (nan, nan, ok, nan, nan):
        trainer._check_finite(terms)
    with pytest.raises(TrainingDiverged, match="after 2 skipped step"):
        trainer._check_finite(nan)
    trainer.nonfinite = 0
    trainer.scaler = SimpleNamespace(is_enabled=lambda: False)  # no scaler: no tolerance
    with pytest.raises(TrainingDiverged):
        trainer._check_finite(nan)


def test_cli_exit_code_on_divergence(tmp_path, capsys):
    work = tmp_path / "run"
    code = main(["train", *TRAIN, "--work-dir", str(work), "--set", "optim.lr=1e15", "--set", "schedule.iters=20",
                 "--set", "schedule.warmup_iters=0"])
    err = capsys.readouterr().err
    assert code == 2 and "segattn train: error: training diverged at iteration" in err, err[-2000:]
    summary = work / "summary.json"
    assert not summary.exists() or json.load(open(summary))["iteration"] < 20
