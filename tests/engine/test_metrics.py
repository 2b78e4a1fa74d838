import math

import pytest
import torch

from segattn.engine.metrics import ConfusionMatrix, format_metrics, json_safe, metrics_from_confusion


def test_confusion_matrix_counts_and_ignores():
    cm = ConfusionMatrix(3, ignore_index=255)
    target = torch.tensor([0, 0, 1, 1, 2, 255, 7])
    pred = torch.tensor([0, 1, 1, 1, 0, 2, 0])
    cm.update(pred, target)
    expected = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert torch.equal(cm.mat, expected)


def test_metric_values():
    m = metrics_from_confusion(torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 0]]), ["a", "b", "c"])
    assert m["IoU"]["a"] == pytest.approx(1 / 3)
    assert m["IoU"]["b"] == pytest.approx(2 / 3)
    assert m["IoU"]["c"] == 0.0
    assert m["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert m["aAcc"] == pytest.approx(3 / 5)
    assert m["mAcc"] == pytest.approx((0.5 + 1 + 0) / 3)


def test_nan_policy_absent_classes():
    # class 2: absent from GT and never predicted -> NaN, excluded; class 1 absent but predicted -> IoU 0
    mat = torch.tensor([[3, 1, 0], [0, 0, 0], [0, 0, 0]])
    m = metrics_from_confusion(mat)
    assert math.isnan(m["IoU"]["2"]) and m["IoU"]["1"] == 0.0
    assert m["mIoU"] == pytest.approx((0.75 + 0.0) / 2)
    assert math.isnan(m["Acc"]["1"]) and m["mAcc"] == pytest.approx(0.75)
    assert json_safe(m)["IoU"]["2"] is None
    assert "nan" in format_metrics(m)
    empty = metrics_from_confusion(torch.zeros(2, 2, dtype=torch.long))
    assert math.isnan(empty["mIoU"]) and math.isnan(empty["aAcc"])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(2).update(torch.zeros(3), torch.zeros(4))
