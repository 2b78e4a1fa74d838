"""Loading a file never runs code: checkpoints hold plain data and are read with weights_only=True."""

import builtins
import random

import numpy as np
import pytest
import torch
from PIL import Image

from segattn.checkpoints import read_checkpoint
from segattn.cli import main
from segattn.engine import build
from segattn.engine.checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state, to_plain
from segattn.engine.config import ModelConfig
from segattn.engine.run import run_evaluation
from segattn.engine.train import finetune_from, train
from tests.engine.standins import TinySeg, ToyDataset, tiny_config


class _Payload:
    """Unpickling this creates ``marker``: stands in for any code a crafted file could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    fake = {"model": {"w": torch.ones(1)}, "config": {"model": {"name": "fcn"}}, "meta": {"num_classes": 3},
            "iteration": 0, "payload": _Payload(marker)}
    torch.save(fake, path)
    return path, marker


def test_crafted_file_would_run_code_if_unpickled(evil):
    path, marker = evil  # guards the tests below: the file really is malicious
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_checkpoint_refuses_crafted_file(evil):
    path, marker = evil
    with pytest.raises(ValueError, match="refusing to load"):
        load_checkpoint(str(path))
    with pytest.raises(ValueError, match="refusing to load"):
        read_checkpoint(str(path))  # model.pretrained / backbone weights
    assert not marker.exists()


def test_eval_and_predict_refuse_crafted_file(evil, tmp_path, capsys):
    path, marker = evil
    with pytest.raises(ValueError):
        run_evaluation(str(path))
    assert main(["eval", "--checkpoint", str(path)]) == 2
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    assert main(["predict", str(image), "--checkpoint", str(path), "--out", str(tmp_path / "pred")]) == 2
    err = capsys.readouterr().err
    assert "segattn eval: error:" in err and "segattn predict: error:" in err and "evil.pt" in err
    assert not marker.exists()


def test_resume_refuses_crafted_file(evil, tmp_path):
    path, marker = evil
    cfg = tiny_config(str(tmp_path / "run"), train={"resume": str(path)})
    with pytest.raises(ValueError, match="refusing to load"):
        train(cfg, model=TinySeg(), train_set=ToyDataset(8), val_set=None)
    assert not marker.exists()


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    atomic_save({"model": {"w": torch.ones(3)}}, str(good))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:50])
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    for p in (cut, text):
        with pytest.raises(ValueError, match="not a readable PyTorch file"):
            load_checkpoint(str(p))
    plain = tmp_path / "tensor.pt"
    torch.save(torch.ones(2), plain)
    with pytest.raises(ValueError, match="expected a mapping"):
        load_checkpoint(str(plain))


def test_training_checkpoint_is_plain_data(tmp_path):
    cfg = tiny_config(str(tmp_path), schedule={"iters": 2}, train={"eval_interval": 1})
    train(cfg, model=TinySeg(), train_set=ToyDataset(8), val_set=ToyDataset(4, seed=1, augment=False))
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(tmp_path / name, weights_only=True)
        assert ckpt["iteration"] in (1, 2) and isinstance(ckpt["config"], dict)
        assert ckpt["best"] is None or type(ckpt["best"]) is float
    set_rng_state(ckpt["rng"])  # the stored streams restore
    a = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(ckpt["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == a


def test_rng_state_survives_weights_only_roundtrip(tmp_path):
    np.random.randn()  # a cached gaussian in numpy's state
    state = rng_state()
    atomic_save({"rng": state}, str(tmp_path / "r.pt"))
    expected = (random.random(), np.random.randn(), torch.rand(1))
    set_rng_state(load_checkpoint(str(tmp_path / "r.pt"))["rng"])
    assert (random.random(), np.random.randn(), torch.rand(1)) == expected


def test_to_plain_converts_numpy_and_rejects_objects():
    out = to_plain({"a": np.float64(0.5), "b": [np.arange(3)], "c": (1, "x")})
    assert type(out["a"]) is float and torch.equal(out["b"][0], torch.arange(3))
    with pytest.raises(TypeError, match=r"checkpoint\['o'\] is a"):
        to_plain({"o": object()})


SMALL = {"name": "fcn", "backbone": "resnet18", "output_stride": 32, "aux": False, "kwargs": {"channels": 8}}


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A segattn training checkpoint of a small fcn (as `segattn train` writes it) and its model."""
    source = build.build_model(ModelConfig(**SMALL), 3)
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    atomic_save({"model": source.state_dict(), "config": {"model": dict(SMALL)}, "rng": rng_state(),
                 "iteration": 5, "meta": {"num_classes": 3}}, str(path))
    return str(path), source.state_dict()


def test_training_checkpoint_as_pretrained_backbone(trained_checkpoint):
    path, source = trained_checkpoint
    tuned = build.build_model(ModelConfig(**{**SMALL, "pretrained": path}), 5)
    for key, value in tuned.backbone.state_dict().items():
        assert torch.equal(source[f"backbone.{key}"], value), key


def test_training_checkpoint_as_pretrained_fine_tunes_the_whole_model(trained_checkpoint, tmp_path, capsys):
    ckpt, source = trained_checkpoint
    same = build.build_model(ModelConfig(**SMALL), 3)
    assert "loaded" in finetune_from(same, ckpt)
    for key, value in same.state_dict().items():
        assert torch.equal(value, source[key]), key  # head included
    other = build.build_model(ModelConfig(**SMALL), 5)  # another class count: the classifier stays fresh
    note = finetune_from(other, ckpt)
    assert "kept fresh" in note and "head.cls.1.weight" in note
    assert torch.equal(other.state_dict()["head.fuse.0.weight"], source["head.fuse.0.weight"])
    assert not torch.equal(other.state_dict()["head.cls.1.bias"][:3], source["head.cls.1.bias"])
    assert finetune_from(other, str(tmp_path / "no.pt")) is None

    tuned = tiny_config(str(tmp_path / "tuned"), model={**SMALL, "pretrained": ckpt},
                        schedule={"iters": 1, "warmup_iters": 0})
    assert train(tuned, train_set=ToyDataset(4), val_set=None)["iteration"] == 1
    assert "fine-tuning from" in capsys.readouterr().err


def test_model_config_with_objects_does_not_break_checkpoints(tmp_path):
    model = TinySeg()
    model.config = {"name": "tiny", "norm": torch.nn.BatchNorm2d}  # not plain data
    cfg = tiny_config(str(tmp_path), schedule={"iters": 1, "warmup_iters": 0})
    with pytest.warns(UserWarning, match="no model_config"):
        train(cfg, model=model, train_set=ToyDataset(4), val_set=None)
    ckpt = load_checkpoint(str(tmp_path / "last.pt"))
    assert ckpt["model_config"] is None and ckpt["iteration"] == 1


class _System:
    """Unpickling this would call ``os.system``: torch reports its module as *blocked*, a wording of its own."""

    def __reduce__(self):
        import os

        return (os.system, ("true",))


@pytest.mark.parametrize("protocol", [2, 4])  # protocol 4 imports with STACK_GLOBAL, which torch does not decode
def test_blocked_global_is_named_as_code_not_as_a_damaged_file(tmp_path, protocol):
    path = tmp_path / "system.pt"
    torch.save({"model": {"w": torch.ones(1)}, "payload": _System()}, path, pickle_protocol=protocol)
    with pytest.raises(ValueError) as info:
        load_checkpoint(str(path))
    text = str(info.value)
    assert "system.pt" in text and "could run code" in text and "system" in text.split("the first:")[1][:20]
    assert "truncated" not in text


def test_sgr_graph_file_uses_the_safe_loader(evil, tmp_path):
    import segattn

    path, marker = evil
    with pytest.raises(ValueError, match=r"SGR graph file .*evil\.pt' holds objects whose loading could run code"):
        segattn.create_module("sgr", 8, graph_file=str(path))
    assert not marker.exists()
