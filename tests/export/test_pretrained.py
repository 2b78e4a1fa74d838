"""Hub-format folders: save_pretrained / from_pretrained round trip, safetensors with the torch fallback,
no silent overwrite, format-1 folders, push_to_hub and ``user/repo`` loading through huggingface_hub
(offline: a fake HfApi and a local Hub cache, never the network), WeightsInfo, ``segattn export
--format hub`` from a training checkpoint, ``segattn predict`` / ``eval`` on a folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segattn
from segattn.checkpoints import read_checkpoint
from segattn.cli import main
from segattn.models import folder, weights  # folder: where save_pretrained and its helpers live
from tests.helpers import perturb_

TINY = {"backbone": "resnet18", "channels": 8}
CARD = dict(classes=["sky", "road", "car"], palette=[[128, 128, 128], [128, 64, 128], [64, 0, 128]],
            mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], crop_size=[32, 48],
            eval={"mode": "whole", "scales": [1.0], "flip": False}, dataset="camvid",
            command="segattn train --config camvid/fcn_r18c_camvid_cpu.yaml")
METRICS = {"mIoU": 0.5, "aAcc": 0.8, "mAcc": 0.6, "IoU": {"sky": 0.9, "road": 0.4, "car": 0.2}}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return perturb_(segattn.create_model("fcn", 3, **TINY)).eval()


def _same_outputs(a, b) -> None:
    x = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_folder_layout_config_and_card(model, tmp_path) -> None:
    folder = model.save_pretrained(tmp_path / "m", metrics=METRICS, **CARD)
    assert sorted(os.listdir(folder)) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "segattn" and config["architectures"] == ["SegmentationModel"]
    assert config["name"] == "fcn" and config["num_classes"] == 3 and config["kwargs"] == TINY
    assert config["id2label"] == {"0": "sky", "1": "road", "2": "car"} and config["label2id"]["car"] == 2
    for key in ("palette", "mean", "std", "crop_size", "eval", "dataset", "command"):
        assert config[key] == CARD[key], key
    assert config["metrics"] == {"mIoU": 0.5, "aAcc": 0.8, "mAcc": 0.6}  # per-class IoU goes to the card
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: segattn\n") and "datasets: [camvid]" in card
    assert "| mIoU (val) | 50.00 |" in card and "| car | 20.00 |" in card and CARD["command"] in card
    loaded = segattn.from_pretrained(tmp_path / "m")
    assert not loaded.training and loaded.config == model.config
    assert loaded.pretrained_config["id2label"] == config["id2label"]
    _same_outputs(loaded, model)


def test_torch_fallback_without_safetensors(model, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(folder, "safetensors_available", lambda: False)
    model.save_pretrained(tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["README.md", "config.json", "model.pt"]
    _same_outputs(segattn.from_pretrained(tmp_path / "m"), model)
    with pytest.raises(ImportError, match="safetensors"):
        model.save_pretrained(tmp_path / "n", safe_serialization=True)
    model.save_pretrained(tmp_path / "st", safe_serialization=None)
    monkeypatch.undo()
    model.save_pretrained(tmp_path / "st2")
    monkeypatch.setattr(folder, "safetensors_available", lambda: False)
    with pytest.raises(ImportError, match="needs the 'safetensors' package"):
        segattn.from_pretrained(tmp_path / "st2")


def test_nothing_overwritten_without_being_asked(model, tmp_path) -> None:
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save_pretrained(tmp_path / "m")
    other = segattn.create_model("fcn", 3, **TINY)
    other.save_pretrained(tmp_path / "m", overwrite=True)
    _same_outputs(segattn.from_pretrained(tmp_path / "m"), other.eval())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="other files"):
        model.save_pretrained(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "mine"]  # no temporary folders


def test_format1_folders_still_load(model, tmp_path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps({"format_version": 1, "name": "fcn", "num_classes": 3,
                                                               **TINY}))
    torch.save(model.state_dict(), tmp_path / "old" / "model.pt")
    _same_outputs(segattn.from_pretrained(tmp_path / "old"), model)


def test_clear_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no model folder"):
        segattn.from_pretrained(tmp_path / "missing")
    (tmp_path / "f.pt").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        segattn.from_pretrained(tmp_path / "f.pt")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        segattn.from_pretrained(tmp_path / "bad")
    with pytest.raises(TypeError, match="unknown keywords.*'colours'"):
        segattn.create_model("fcn", 3, **TINY).save_pretrained(tmp_path / "x", colours=[])
    with pytest.raises(ValueError, match="2 class names given for a model with 3 classes"):
        segattn.create_model("fcn", 3, **TINY).save_pretrained(tmp_path / "x", classes=["a", "b"])



@pytest.mark.parametrize("pointer", ["../other/model.safetensors", "ABS", "sub/model.safetensors", ".."])
def test_config_cannot_point_weights_outside_the_folder(model, tmp_path, pointer) -> None:
    model.save_pretrained(tmp_path / "other")  # weights a crafted folder would like us to read
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    (folder / "sub").mkdir()
    shutil.copy(folder / "model.safetensors", folder / "sub" / "model.safetensors")
    pointer = str(tmp_path / "other" / "model.safetensors") if pointer == "ABS" else pointer
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "weights": pointer}))
    with pytest.raises(ValueError, match=r"config\.json: 'weights' must be a file name inside the folder"):
        segattn.from_pretrained(folder)
    with pytest.raises(ValueError, match="must be a file name inside"):
        weights.weights_info(folder)


def test_damaged_safetensors_names_the_file(model, tmp_path) -> None:
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    data = (folder / "model.safetensors").read_bytes()
    for damaged in (data[: len(data) // 2], data[:5], b"not a safetensors file at all"):
        (folder / "model.safetensors").write_bytes(damaged)
        with pytest.raises(ValueError, match=r"model\.safetensors' is not a readable safetensors file"):
            segattn.from_pretrained(folder)
    with pytest.raises(ValueError, match=r"model\.safetensors' is not a readable safetensors file"):
        read_checkpoint(str(folder / "model.safetensors"))  # as model.pretrained

class FakeHfApi:
    """Stands in for huggingface_hub.HfApi: the "remote" is a local folder per repo."""

    remote: Path = Path(".")
    calls: list = []

    def __init__(self, token=None) -> None:
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
        FakeHfApi.calls.append(("create_repo", repo_id, private, exist_ok, repo_type))
        (FakeHfApi.remote / repo_id).mkdir(parents=True, exist_ok=exist_ok)

    def upload_folder(self, repo_id, folder_path, commit_message=None, revision=None, repo_type=None):
        FakeHfApi.calls.append(("upload_folder", repo_id, commit_message, repo_type, sorted(os.listdir(folder_path))))
        shutil.copytree(folder_path, FakeHfApi.remote / repo_id, dirs_exist_ok=True)
        return f"https://hub.invalid/{repo_id}/commit/1"


def _hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """The layout huggingface_hub's cache uses: models--user--repo/{refs/main, snapshots/<commit>/...}."""
    commit = "0" * 40
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    shutil.copytree(folder, root / "snapshots" / commit)


def test_push_to_hub_and_load_by_repo_id_offline(model, tmp_path, monkeypatch) -> None:
    hub = pytest.importorskip("huggingface_hub")
    import huggingface_hub.constants as hub_constants

    # never the network: offline mode, and an endpoint nobody listens on should anything ask anyway
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    FakeHfApi.remote, FakeHfApi.calls = tmp_path / "remote", []
    monkeypatch.setattr(hub, "HfApi", FakeHfApi)
    url = model.push_to_hub("someone/fcn-toy", private=True, metrics=METRICS, **CARD)
    assert url.endswith("someone/fcn-toy/commit/1")
    assert FakeHfApi.calls[0] == ("create_repo", "someone/fcn-toy", True, True, "model")
    assert FakeHfApi.calls[1][4] == ["README.md", "config.json", "model.safetensors"]
    # the real huggingface_hub.snapshot_download, offline, reading a local Hub cache
    _hub_cache(tmp_path / "cache", "someone/fcn-toy", FakeHfApi.remote / "someone" / "fcn-toy")
    loaded = segattn.from_pretrained("someone/fcn-toy", cache_dir=str(tmp_path / "cache"))
    _same_outputs(loaded, model)
    assert loaded.pretrained_config["dataset"] == "camvid"
    with pytest.raises(Exception, match="someone/absent|offline|cache"):
        segattn.from_pretrained("someone/absent", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="user/name"):
        model.push_to_hub("not a repo")


def test_weights_info_and_models_info(model, tmp_path, capsys) -> None:
    model.save_pretrained(tmp_path / "m", metrics=METRICS, **CARD)
    info = weights.weights_info(tmp_path / "m")
    assert (info.model, info.dataset, info.classes, info.crop_size, info.miou) == ("fcn", "camvid", CARD["classes"],
                                                                                     [32, 48], 0.5)
    assert info.file_size == os.path.getsize(tmp_path / "m" / "model.safetensors")
    expected = weights.model_macs("fcn", 3, [32, 48], **TINY)
    assert info.macs == expected > 0
    assert main(["models", "--info", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "3: sky, road, car" in out and "50.00 % (val)" in out and "at 32x48" in out
    assert main(["models", "--info", "fcnn"]) == 2
    assert "unknown model or folder 'fcnn'; did you mean fcn" in capsys.readouterr().err


def _training_checkpoint(tmp_path: Path) -> Path:
    """A checkpoint as `segattn train` writes it (model, config, meta), plus summary.json beside it."""
    from segattn.engine import build
    from segattn.engine.config import config_from_dict

    cfg = config_from_dict({"name": "toy", "model": {"name": "fcn", "backbone": "resnet18", "kwargs": {"channels": 8}},
                            "data": {"dataset": "synthetic", "crop_size": [32, 48], "val_batch_size": 2,
                                     "dataset_kwargs": {"num_classes": 3}, "val_kwargs": {"num_samples": 2}},
                            "eval": {"scales": [0.5]}})
    torch.manual_seed(1)
    net = perturb_(build.build_model(cfg.model, 3))
    run = tmp_path / "run"
    run.mkdir()
    ckpt = {"model": net.state_dict(), "config": cfg.to_dict(), "iteration": 7,
            "meta": {"num_classes": 3, "ignore_index": 255, "classes": CARD["classes"], "palette": CARD["palette"]}}
    torch.save(ckpt, run / "last.pt")
    (run / "summary.json").write_text(json.dumps({"iteration": 7, "metrics": METRICS}))
    return run / "last.pt"


def test_export_hub_from_checkpoint_then_predict_and_eval_take_the_folder(tmp_path, capsys) -> None:
    ckpt = _training_checkpoint(tmp_path)
    assert main(["export", "--checkpoint", str(ckpt), "--format", "hub", "--out", str(tmp_path / "hub")]) == 0
    files = sorted(os.listdir(tmp_path / "hub"))
    assert files == ["README.md", "config.json", "model.safetensors", "training_config.json"]
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["mean"] == CARD["mean"] and config["crop_size"] == [32, 48] and config["eval"]["scales"] == [0.5]
    assert config["metrics"]["mIoU"] == 0.5 and config["metrics"]["iteration"] == 7
    assert "segattn train --config training_config.json" in (tmp_path / "hub" / "README.md").read_text()
    # predict from the training checkpoint and from the folder: the same masks
    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(img)
    assert main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(tmp_path / "p1"), "--device", "cpu"]) == 0
    assert main(["predict", str(img), "--checkpoint", str(tmp_path / "hub"), "--out", str(tmp_path / "p2"),
                 "--device", "cpu"]) == 0
    a = np.asarray(Image.open(tmp_path / "p1" / "a_mask.png"))
    b = np.asarray(Image.open(tmp_path / "p2" / "a_mask.png"))
    assert a.shape == (40, 52) and np.array_equal(a, b)
    assert Image.open(tmp_path / "p2" / "a_mask.png").getpalette()[3:6] == CARD["palette"][1]
    # eval from the folder (its training_config.json: dataset, normalisation, eval settings) = eval from the run
    for source, out in ((ckpt, "e1.json"), (tmp_path / "hub", "e2.json")):
        assert main(["eval", "--checkpoint", str(source), "--device", "cpu", "--out", str(tmp_path / out)]) == 0
    e1, e2 = (json.loads((tmp_path / n).read_text()) for n in ("e1.json", "e2.json"))
    assert e1["samples"] == e2["samples"] == 2 and e1["mIoU"] == e2["mIoU"] and e1["IoU"] == e2["IoU"]
    # refusing to replace the folder, and a clear error for --format hub with --model
    assert main(["export", "--checkpoint", str(ckpt), "--format", "hub", "--out", str(tmp_path / "hub")]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["export", "--model", "fcn", "--format", "hub", "--out", str(tmp_path / "h2")]) == 2
    assert "--format hub converts a training checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("mean, std, message", [
    ([0.0, 0.0, 0.0], [1.0, 0.0, 1.0], "every std must be > 0"),
    ([0.0, 0.0, 0.0], None, "give both mean and std"),
    ([0.0, 0.0], [1.0, 1.0, 1.0], "equal length"),
    ([0.0, float("nan"), 0.0], [1.0, 1.0, 1.0], "finite"),
])
def test_save_pretrained_refuses_a_meaningless_normalisation(model, tmp_path, mean, std, message) -> None:
    with pytest.raises(ValueError, match=message):
        model.save_pretrained(tmp_path / "m", mean=mean, std=std)
    assert not (tmp_path / "m").exists()
