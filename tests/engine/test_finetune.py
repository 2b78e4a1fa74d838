"""``segattn train --init FOLDER``: a converted 19-class Cityscapes model fine-tuned on other classes.

The folder comes from the mmseg fixtures (tests/convert/fixtures.py), re-shaped to 19 classes and
converted with ``segattn convert mmseg`` as a user would. Two iterations on a 4-class folder dataset
(made here) and on CamVid's 11 classes (``SEGATTN_DATA``), then eval and predict on the result.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch

from segattn.cli import main
from segattn.data.datasets.cityscapes import CITYSCAPES_CLASSES
from segattn.engine import train as train_mod
from segattn.models.folder import load_pretrained_state, read_pretrained_config
from tests.convert.fixtures import record, write_checkpoint

PSP = "pspnet_r50-d8_4xb2-80k_cityscapes-512x1024"
ENC = "encnet_r50-d8_4xb2-80k_cityscapes-512x1024"
CLASS_SHAPED = ("conv_seg.weight", "conv_seg.bias", "se_layer.weight", "se_layer.bias")


def city19(name: str) -> Dict:
    """The fixture record with 19 classes (Cityscapes' names) instead of its 7."""
    rec = copy.deepcopy(record(name))
    old = len(rec["dataset_meta"]["classes"])
    for item in rec["keys"]:
        if item[0].endswith(CLASS_SHAPED):
            assert item[1][0] == old
            item[1][0] = 19
    rec["cfg"] = rec["cfg"].replace(f"num_classes={old},", "num_classes=19,")
    rec["dataset_meta"] = {"classes": list(CITYSCAPES_CLASSES),
                           "palette": [[(37 * i) % 256, (91 * i) % 256, (151 * i) % 256] for i in range(19)]}
    return rec


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache: Dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            tmp = tmp_path_factory.mktemp("zoo")
            ckpt = write_checkpoint(city19(name), tmp / "city.pth")
            assert main(["convert", "mmseg", str(ckpt), "--out", str(tmp / "city")]) == 0
            assert read_pretrained_config(tmp / "city")["num_classes"] == 19
            cache[name] = tmp / "city"
        return cache[name]

    return get


def folder_dataset(root: Path, classes: int = 4, n: int = 6) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, classes, (48, 64), dtype=np.uint8)).save(root / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("".join(f"mine{c}\n" for c in range(classes)))
    (root / "train.txt").write_text("0\n1\n2\n3\n")
    (root / "val.txt").write_text("4\n5\n")
    return root


def snapshot_first_step(monkeypatch) -> Dict[str, torch.Tensor]:
    """The model's weights when the first training step starts (filled in during the run)."""
    seen: Dict[str, torch.Tensor] = {}
    original = train_mod.Trainer.train_step

    def spy(self, images, masks):
        if not seen:
            seen.update({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return original(self, images, masks)

    monkeypatch.setattr(train_mod.Trainer, "train_step", spy)
    return seen


def check_start(seen: Dict[str, torch.Tensor], folder: Path, k: int, seed: int = 0) -> None:
    """Every tensor equals the folder's, except the classifiers: fresh, as a new model's with the run's seed."""
    import segattn

    state = load_pretrained_state(folder, read_pretrained_config(folder))
    cls = [key for key in seen if key.endswith(("cls.1.weight", "cls.1.bias"))]
    assert sorted(cls) == ["aux_head.cls.1.bias", "aux_head.cls.1.weight", "head.cls.1.bias", "head.cls.1.weight"]
    assert set(seen) == set(state)
    for key, value in seen.items():
        if key in cls:
            assert value.shape[0] == k and state[key].shape[0] == 19, key
        else:
            assert torch.equal(value, state[key]), key
    torch.manual_seed(seed)  # the trainer seeds before building the model: the same fresh classifier
    kw = read_pretrained_config(folder)["kwargs"]
    fresh = segattn.create_model("pspnet", k, **kw).state_dict()
    for key in cls:
        assert torch.equal(seen[key], fresh[key]), key


def test_folder_dataset_from_a_converted_cityscapes_model(converted, tmp_path, monkeypatch, capsys) -> None:
    folder = converted(PSP)
    data = folder_dataset(tmp_path / "mine")
    seen = snapshot_first_step(monkeypatch)
    work = tmp_path / "ft"
    args = ["train", "--config", "finetune/zoo_folder.yaml", "--init", str(folder), "--work-dir", str(work),
            "--set", f"data.root={data}", "--set", "schedule.iters=2", "--set", "schedule.warmup_iters=0",
            "--set", "data.resize=[48, 64]", "--set", "data.crop_size=[32, 32]", "--set", "data.batch_size=2",
            "--set", "train.progress=false", "--set", "train.tensorboard=false", "--set", "train.threads=1", "--set", "data.num_workers=0"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"init from {folder} (pspnet, 19 -> 4 classes)" in err
    assert "re-initialised: head.cls.1.weight, head.cls.1.bias, aux_head.cls.1.weight, aux_head.cls.1.bias" in err
    check_start(seen, folder, 4)
    stored = json.loads((work / "config.json").read_text())
    theirs = read_pretrained_config(folder)
    assert stored["model"]["name"] == "pspnet" and stored["model"]["init"] == str(folder)
    assert stored["model"]["backbone"] == theirs["kwargs"]["backbone"] == "resnet50c"
    assert stored["model"]["kwargs"]["channels"] == theirs["kwargs"]["channels"]  # not the config's
    assert stored["data"]["mean"] == theirs["mean"] and stored["data"]["std"] == theirs["std"]
    assert stored["eval"]["mode"] == theirs["eval"]["mode"] and stored["optim"]["lr"] == 0.002  # the config's
    # eval and predict on the result (the run's stored config describes the architecture)
    assert main(["eval", "--checkpoint", str(work / "last.pt"), "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert len(metrics["IoU"]) == 4 and "mine3" in metrics["IoU"]
    assert main(["predict", str(data / "images" / "5.png"), "--checkpoint", str(work / "last.pt"),
                 "--out", str(tmp_path / "pred")]) == 0
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["5_mask.png", "5_overlay.png"]


@pytest.mark.skipif(not os.environ.get("SEGATTN_DATA"), reason="needs SEGATTN_DATA with camvid/")
def test_camvid_from_a_converted_cityscapes_model(converted, tmp_path, monkeypatch) -> None:
    folder = converted(PSP)
    seen = snapshot_first_step(monkeypatch)
    work = tmp_path / "ft"
    args = ["train", "--config", "finetune/zoo_camvid.yaml", "--init", str(folder), "--work-dir", str(work),
            "--set", "schedule.iters=2", "--set", "schedule.warmup_iters=0", "--set", "data.resize=[90, 120]",
            "--set", "data.crop_size=[64, 64]", "--set", "data.batch_size=2", "--set", "eval.max_samples=2",
            "--set", "data.val_resize=[90, 120]", "--set", "train.eval_interval=0",
            "--set", "train.progress=false", "--set", "train.tensorboard=false", "--set", "train.threads=1", "--set", "data.num_workers=0"]
    assert main(args) == 0
    check_start(seen, folder, 11)
    assert main(["eval", "--checkpoint", str(work / "last.pt"), "--out", str(tmp_path / "m.json")]) == 0
    assert len(json.loads((tmp_path / "m.json").read_text())["IoU"]) == 11
    image = next(Path(os.environ["SEGATTN_DATA"], "camvid").rglob("*.png"))
    assert main(["predict", str(image), "--checkpoint", str(work / "last.pt"), "--out", str(tmp_path / "pred")]) == 0
    assert any((tmp_path / "pred").iterdir())


def test_class_shaped_tensors_start_fresh(converted) -> None:
    """EncNet's SE layer (K outputs) is re-initialised with the classifiers; everything else is loaded."""
    import segattn
    from segattn.models.transfer import init_from_folder

    folder = converted(ENC)
    model = segattn.create_model("encnet", 5, **read_pretrained_config(folder)["kwargs"])
    report = init_from_folder(model, str(folder))
    assert sorted(report.reinitialised) == ["aux_head.cls.1.bias", "aux_head.cls.1.weight", "head.cls.1.bias",
                                            "head.cls.1.weight", "head.se_layer.bias", "head.se_layer.weight"]
    assert not report.ignored and len(report.loaded) == len(model.state_dict()) - 6
    same = segattn.create_model("encnet", 19, **read_pretrained_config(folder)["kwargs"])
    assert not init_from_folder(same, str(folder)).reinitialised  # same class count: every tensor loaded
    no_aux = segattn.create_model("encnet", 5, **{**read_pretrained_config(folder)["kwargs"], "aux": False})
    ignored = init_from_folder(no_aux, str(folder)).ignored  # the auxiliary head switched off: its tensors unused
    assert ignored and all(key.startswith("aux_head.") for key in ignored)


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("segattn train: error: "), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_refusals(converted, tmp_path, capsys) -> None:
    folder = converted(PSP)
    data = folder_dataset(tmp_path / "mine")
    base = ["train", "--config", "finetune/zoo_folder.yaml", "--work-dir", str(tmp_path / "w"),
            "--set", f"data.root={data}"]
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "config.json").write_text('{"architectures": ["BertModel"]}')
    (tmp_path / "unknown").mkdir()
    (tmp_path / "unknown" / "config.json").write_text('{"name": "segformer", "num_classes": 19, "kwargs": {}}')
    cases = [
        (["--init", str(tmp_path / "nope")], "is not found, expected a save_pretrained"),
        (["--init", str(tmp_path / "foreign")], "not a segattn model config"),
        (["--init", str(folder / "model.safetensors")], "is a file, expected"),
        (["--init", str(tmp_path / "unknown")], "names model 'segformer', which this segattn cannot build"),
        (["--init", str(folder), "--set", f"model.pretrained={folder}"], "exclude each other"),
        (["--init", str(folder), "--set", "model.kwargs.channels=32"],
         "does not fit this model: 6 shape (e.g. head.context.bottleneck.0.weight (64, 768, 3, 3) in the folder"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        assert message in _one_error(capsys), extra
    # the old way: a folder of another architecture as model.pretrained says how to do it from the CLI
    assert main(["train", "--config", "camvid/pspnet_r18c_camvid_cpu.yaml", "--work-dir", str(tmp_path / "v"),
                 "--set", f"model.pretrained={folder}", "--set", "data.dataset=folder",
                 "--set", f"data.root={data}"]) == 2
    assert f"segattn train --config CFG --init {folder}" in _one_error(capsys)
    # a damaged weights file is one line too
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((folder / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    assert main(base + ["--init", str(broken), "--set", "train.overwrite=true"]) == 2
    assert f"cannot initialise from {broken}" in _one_error(capsys)
    # --init with --resume (without --config: the stored run) is refused
    assert main(["train", "--work-dir", str(tmp_path / "w"), "--resume", "auto", "--init", str(folder)]) == 2
    assert "--init" in _one_error(capsys)


def test_a_config_built_in_python_without_the_folder_settings_is_named(converted, tmp_path) -> None:
    from segattn.engine.config import config_from_dict, load_config
    from segattn.engine.train import train

    folder = converted(PSP)
    data = folder_dataset(tmp_path / "mine")
    plain = {"model": {"init": str(folder)}, "data": {"dataset": "folder", "root": str(data), "crop_size": 32},
             "train": {"work_dir": str(tmp_path / "w"), "progress": False, "tensorboard": False}}
    with pytest.raises(ValueError, match="holds a 'pspnet' model but model.name is 'fcn'.*load_config"):
        train(config_from_dict(plain))
    cfg = load_config(None, [f"model.init={folder}", "data.dataset=folder", f"data.root={data}"])
    assert cfg.model.name == "pspnet" and cfg.model.kwargs["channels"] == 64  # the folder's settings applied
