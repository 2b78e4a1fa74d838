"""Labels with no valid pixel (all ``ignore_index``): training stops and evaluation refuses, each with a
message that says so, instead of ending with loss 0 and an mIoU of NaN."""

from __future__ import annotations

import pytest
import torch

from segattn.cli import main
from segattn.engine.evaluate import NoValidPixels, evaluate
from segattn.engine.train import VOID_WINDOW, NoLabelledPixels, train
from tests.engine.standins import PixelSeg, TinySeg, ToyDataset, tiny_config


class VoidDataset(ToyDataset):
    """ToyDataset whose masks are void (ignore_index) everywhere, except in images listed in ``labelled``."""

    def __init__(self, n: int = 8, labelled: tuple = (), **kwargs) -> None:
        super().__init__(n, **kwargs)
        self.labelled = set(labelled)

    def __getitem__(self, i: int):
        img, mask = super().__getitem__(i)
        return img, mask if i in self.labelled else torch.full_like(mask, self.ignore_index)


def test_training_on_void_labels_stops_with_a_message(tmp_path):
    cfg = tiny_config(str(tmp_path), schedule={"iters": 6, "warmup_iters": 0})
    with pytest.raises(NoLabelledPixels, match=r"no labelled pixel in 2 training batch\(es\) in a row.*ignore_index=255"):
        train(cfg, model=TinySeg(), train_set=VoidDataset(8), val_set=None)  # 8 images / batch 4: an epoch is 2
    assert not (tmp_path / "last.pt").exists()


def test_a_short_run_on_void_labels_stops_too(tmp_path):
    cfg = tiny_config(str(tmp_path), schedule={"iters": 1, "warmup_iters": 0})
    with pytest.raises(NoLabelledPixels, match="no labelled pixel in 1 training batch"):
        train(cfg, model=TinySeg(), train_set=VoidDataset(64), val_set=None)


def test_some_void_batches_are_fine(tmp_path):
    cfg = tiny_config(str(tmp_path), schedule={"iters": 30, "warmup_iters": 0}, data={"batch_size": 1},
                      train={"seed": 0})
    labelled = tuple(range(0, 64, 4))  # one image in four has labels: void runs much shorter than the window
    assert VOID_WINDOW >= 20
    assert train(cfg, model=TinySeg(), train_set=VoidDataset(64, labelled=labelled), val_set=None)["iteration"] == 30


def test_evaluation_without_a_valid_pixel_says_so():
    batches = [VoidDataset(4)[i] for i in range(4)]
    loader = [(torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches]))]
    with pytest.raises(NoValidPixels, match=r"no valid pixel in 4 image\(s\).*ignore_index=255"):
        evaluate(PixelSeg(), loader, 3, show_progress=False)
    out_of_range = [(loader[0][0], torch.full_like(loader[0][1], 7))]  # labels beyond num_classes count as void
    with pytest.raises(NoValidPixels, match="outside 0..2"):
        evaluate(PixelSeg(), out_of_range, 3, show_progress=False)


def test_validation_on_void_labels_stops_training(tmp_path):
    cfg = tiny_config(str(tmp_path), schedule={"iters": 2, "warmup_iters": 0}, train={"eval_interval": 1})
    with pytest.raises(NoValidPixels, match="no valid pixel"):
        train(cfg, model=TinySeg(), train_set=ToyDataset(8), val_set=VoidDataset(4, augment=False))


def test_cli_reports_void_labels_in_one_line(tmp_path, capsys, monkeypatch):
    import segattn.engine.train as train_mod

    def void_train(cfg, model=None, train_set=None, val_set=None, callbacks=()):  # noqa: ANN001, ANN202
        return train_mod.Trainer(cfg, TinySeg(), VoidDataset(8), None, callbacks).fit()

    monkeypatch.setattr(train_mod, "train", void_train)
    argv = ["train", "--config", "synthetic/fcn_r18_synthetic.yaml", "--work-dir", str(tmp_path / "w"),
            "--set", "schedule.iters=3", "--set", "train.progress=false", "--set", "data.num_workers=0",
            "--set", "data.batch_size=4"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("segattn train: error: no labelled pixel in 2 training batch(es)"), err
