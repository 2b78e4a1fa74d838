"""NaN / inf input: predict, eval and viz warn once per image naming it; the model warns once in eval."""

import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import segattn
from segattn.cli import main
from segattn.engine.config import config_from_dict
from segattn.engine.evaluate import evaluate
from segattn.engine.predict import predict_labels
from segattn.errors import NonFiniteInputWarning


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return segattn.create_model("fcn", 3, backbone="resnet18", channels=8, aux=False).eval()


def _nan_image(size=(24, 24)):
    image = np.random.default_rng(0).random((*size, 3)).astype(np.float32) * 255
    image[3, 4, 0] = np.nan
    return image


def test_predict_labels_warns_naming_the_image(model):
    cfg = config_from_dict({})
    with pytest.warns(NonFiniteInputWarning, match=r"image a\.tif has 1 non-finite value"):
        predict_labels(model, _nan_image(), cfg, 3, name="a.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteInputWarning)
        predict_labels(model, np.zeros((24, 24, 3), np.uint8), cfg, 3, name="b.png")


def test_evaluate_warns_once_per_bad_image_with_its_file(model):
    images = torch.rand(3, 3, 16, 16)
    images[1, 0, 0, 0] = float("inf")
    images[2, 2, 5, 5] = float("nan")
    batches = [(images[:2], torch.zeros(2, 16, 16, dtype=torch.long)), (images[2:], torch.zeros(1, 16, 16, dtype=torch.long))]
    with pytest.warns(NonFiniteInputWarning) as record:
        evaluate(model, batches, 3, show_progress=False, names=["a.png", "b.png", "c.png"])
    assert model.check_finite  # the model's own check is off during evaluate only
    texts = [str(r.message) for r in record if issubclass(r.category, NonFiniteInputWarning)]
    assert len(texts) == 2 and "image b.png" in texts[0] and "image c.png" in texts[1]


def test_model_forward_warns_once_in_eval_and_can_be_turned_off():
    model = segattn.create_model("fcn", 3, backbone="resnet18", channels=8, aux=False).eval()
    x = torch.rand(1, 3, 16, 16)
    x[0, 0, 0, 0] = float("nan")
    with pytest.warns(NonFiniteInputWarning, match="SegmentationModel input has 1 non-finite.*shown once per model.*"
                                                   "check_finite = False"):
        model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteInputWarning)
        model(x)  # once only
        quiet = segattn.create_model("fcn", 3, backbone="resnet18", channels=8, aux=False).eval()
        quiet.check_finite = False
        quiet(x)
        model.train()(torch.rand(2, 3, 16, 16))  # training keeps its divergence guard, no check here


@pytest.mark.parametrize("command", ["predict", "viz"])
def test_cli_warns_per_image_in_one_line(command, model, tmp_path, monkeypatch, capsys):
    import segattn.engine.predict as predict_mod

    name = "nonlocal" if command == "viz" else "fcn"
    net = segattn.create_model(name, 3, backbone="resnet18", channels=8, aux=False)
    folder = net.save_pretrained(tmp_path / "hub")
    images = tmp_path / "imgs"
    images.mkdir()
    for stem in ("a", "b"):
        Image.fromarray(np.full((24, 24, 3), 100, np.uint8)).save(images / f"{stem}.png")
    original = predict_mod.preprocess

    def poisoned(image, cfg):
        x = original(image, cfg)
        x[0, 0, 0, 0] = float("nan")
        return x

    monkeypatch.setattr(predict_mod, "preprocess", poisoned)
    argv = [command, str(images), "--checkpoint", str(folder), "--out", str(tmp_path / "out")]
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        # print as Python does outside pytest (pytest records warnings instead of showing them)
        warnings.showwarning = lambda m, c, f, n, file=None, line=None: sys.stderr.write(warnings.formatwarning(m, c, f, n, line))
        main(argv)
    err = capsys.readouterr().err
    for stem in ("a", "b"):
        assert f"segattn {command}: warning: image {images / stem}.png after preprocessing has 1 non-finite" in err
    assert "warnings.warn" not in err and "SegmentationModel input" not in err  # one warning per image, no more
