import pytest
import torch
from torch.utils.data import DataLoader

from segattn.engine.evaluate import evaluate, infer
from tests.engine.standins import PixelSeg, TinySeg, ToyDataset


def test_slide_equals_whole_for_a_pixelwise_model():
    model = PixelSeg().eval()
    x = torch.randn(2, 3, 23, 31)
    whole = infer(model, x, 3, "whole")
    slide = infer(model, x, 3, "slide", crop_size=[8, 10], stride=[5, 7])
    torch.testing.assert_close(slide, whole)
    bigger = infer(model, x, 3, "slide", crop_size=[64, 64], stride=[32, 32])  # window larger than image
    torch.testing.assert_close(bigger, whole)


def test_slide_stride_larger_than_the_window_is_refused():
    x = torch.randn(1, 3, 40, 40)  # windows at rows 0, 12 and 24 of 16: rows 16..23 were left NaN (0 / 0)
    with pytest.raises(ValueError, match=r"stride \[12, 20\] is larger than crop_size \[8, 8\]"):
        infer(PixelSeg().eval(), x, 3, "slide", crop_size=[8, 8], stride=[12, 20])


def test_slide_differs_for_a_model_with_context():
    model = TinySeg().eval()
    x = torch.randn(1, 3, 20, 20)
    whole = infer(model, x, 3, "whole")
    slide = infer(model, x, 3, "slide", crop_size=[8, 8], stride=[6, 6])
    assert slide.shape == whole.shape and not torch.allclose(slide, whole)


def test_flip_tta_averages_flipped_passes():
    model = TinySeg().eval()
    x = torch.randn(1, 3, 16, 16)
    tta = infer(model, x, 3, scales=[1.0], flip=True)
    expected = (model(x).softmax(1) + model(x.flip(-1)).flip(-1).softmax(1)) / 2
    torch.testing.assert_close(tta, expected)
    ms = infer(model, x, 3, scales=[0.5, 1.0, 1.5], flip=True)
    assert ms.shape == (1, 3, 16, 16)
    torch.testing.assert_close(ms.sum(1), torch.ones(1, 16, 16))


def test_evaluate_perfect_model():
    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            return x * self.w * 10  # class = argmax channel, as ToyDataset labels it

    ds = ToyDataset(6, augment=False)
    m = evaluate(Oracle(), DataLoader(ds, batch_size=2), 3, 255, ds.classes)
    assert m["mIoU"] == pytest.approx(1.0) and m["aAcc"] == pytest.approx(1.0)
    assert m["pixels"] == sum(int((ds[i][1] != 255).sum()) for i in range(6))
    m2 = evaluate(Oracle(), DataLoader(ds, batch_size=2), 3, 255, ds.classes, mode="slide", crop_size=[5, 5],
                  stride=[4, 4], scales=[1.0], flip=True)
    assert m2["mIoU"] == pytest.approx(1.0)


def test_unknown_mode():
    with pytest.raises(ValueError, match="slide"):
        infer(PixelSeg().eval(), torch.randn(1, 3, 4, 4), 3, "tiles")
