"""``segattn eval`` internals: weights that do not fit, max_samples counted in images, eval settings
and devices checked before any image is read (issue 12)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from segattn.engine.distributed import pick_device
from segattn.engine.evaluate import check_settings, evaluate
from segattn.engine.run import load_weights
from segattn.errors import SegattnError
from tests.engine.standins import PixelSeg, TinySeg, ToyDataset


def test_weights_that_do_not_fit_are_one_message_naming_the_file():
    model = TinySeg(width=8)
    other = TinySeg(width=4).state_dict()
    with pytest.raises(SegattnError, match=r"ckpt\.pt does not fit model 'tiny'.*of another shape \(e\.g\. stem\.weight: \(4, 3, 3, 3\) in the file"):
        load_weights(model, {"model": other}, "ckpt.pt")
    with pytest.raises(SegattnError, match=r"1 missing \(e\.g\. cls\.bias\), 1 unexpected \(e\.g\. extra\)"):
        state = dict(model.state_dict())
        state.pop("cls.bias")
        load_weights(model, {"model": {**state, "extra": torch.zeros(1)}}, "x.pt")
    with pytest.raises(SegattnError, match="holds no model weights"):
        load_weights(model, {"model": {}}, "empty.pt")
    load_weights(model, {"model": TinySeg(width=8).state_dict()}, "ok.pt")


class _Counting(PixelSeg):
    def __init__(self) -> None:
        super().__init__()
        self.images = 0

    def forward(self, x):  # noqa: ANN001, ANN201
        self.images += x.shape[0]
        return super().forward(x)


def test_max_samples_counts_images_not_batches():
    ds = ToyDataset(n=10)
    model = _Counting().eval()
    evaluate(model, DataLoader(ds, batch_size=4), 3, 255, ds.classes, max_samples=5, show_progress=False)
    assert model.images == 5  # before: 5 batches of 4 = all 10 images
    with pytest.raises(ValueError, match="max_samples"):
        evaluate(model, DataLoader(ds, batch_size=4), 3, max_samples=0)


@pytest.mark.parametrize("args,match", [
    (("slide", None, [4, 4], [1.0]), "slide mode needs eval.crop_size"),
    (("slide", [8, 8], [0, 4], [1.0]), r"eval\.stride must be one or two positive integers"),
    (("slide", [8, 8, 8], [4, 4], [1.0]), r"eval\.crop_size must be"),
    (("whole", None, None, [0.0]), r"eval\.scales must be numbers in \(0, 8\]"),
    (("whole", None, None, [100]), r"eval\.scales"),
    (("tiles", None, None, [1.0]), "unknown eval.mode 'tiles'"),
])
def test_eval_settings_checked_before_any_image(args, match):
    with pytest.raises(ValueError, match=match):
        check_settings(*args)
    with pytest.raises(ValueError, match=match):  # evaluate checks before reading its first batch

        def no_batches():
            raise AssertionError("a batch was read")
            yield

        evaluate(PixelSeg(), no_batches(), 3, mode=args[0], crop_size=args[1], stride=args[2], scales=args[3])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name,match", [
    ("cuda", "not available: this PyTorch build has no CUDA support|no CUDA GPU is visible"),
    ("cuda:1", "'cuda:1' is not available"),
    ("gpu", "unknown device 'gpu'; expected auto, cpu, cuda or cuda:N"),
])
def test_unavailable_devices_are_refused(name, match):
    with pytest.raises(SegattnError, match=match):
        pick_device(name)
    assert pick_device("auto") == torch.device("cpu") == pick_device("cpu")


def test_a_model_without_out_logits_is_named_not_a_bare_key():
    from segattn.engine.evaluate import forward_logits

    class Odd(torch.nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            return {"logits": x}

    with pytest.raises(ValueError, match=r"without the logits key 'out' \(keys: \['logits'\]\)"):
        forward_logits(Odd(), torch.randn(1, 3, 4, 4))


def test_model_overrides_of_a_saved_folder_are_refused_not_ignored(tmp_path):
    import segattn
    from segattn.engine.predict import load_model
    from segattn.engine.run import run_evaluation

    folder = tmp_path / "saved"
    segattn.create_model("fcn", 3, backbone="resnet18", aux=False, channels=8).save_pretrained(str(folder))
    model, cfg, _ = load_model(str(folder), ["eval.flip=true"])  # its other settings may change
    assert cfg.eval.flip is True
    for call in (lambda o: load_model(str(folder), o), lambda o: run_evaluation(str(folder), overrides=o)):
        with pytest.raises(SegattnError, match=r"--set model.name: .* is a saved model whose architecture"):
            call(["model.name=pspnet"])  # was: the folder's fcn used, the override dropped silently


def test_evaluation_without_a_validation_split_says_so(tmp_path):
    import segattn
    from segattn.engine.run import run_evaluation

    folder = tmp_path / "saved"
    segattn.create_model("fcn", 3, backbone="resnet18", aux=False, channels=8).save_pretrained(str(folder))
    with pytest.raises(SegattnError, match=r"config key data.val_split: got null, expected the split to score"):
        run_evaluation(str(folder), overrides=["data.val_split=null"])  # was: "SyntheticContext: split must be..."


def test_device_flag_and_override_together_are_refused():
    from segattn.engine.run import run_evaluation

    with pytest.raises(SegattnError, match=r"--device cpu and --set train.device=cuda set the same key train.device"):
        run_evaluation("missing.pt", overrides=["train.device=cuda"], device="cpu")  # was: the flag won silently
