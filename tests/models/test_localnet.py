"""LocalNet: shapes, the receptive field it states (measured from input gradients), bad keywords."""

from __future__ import annotations

import pytest
import torch

from segattn.models import create_backbone, create_model
from segattn.models.backbones import LocalNet


def _support_side(net: LocalNet, size: int, cell: int) -> int:
    """Side of the input square whose pixels change output cell (cell, cell) of layer4."""
    net.eval()
    x = torch.randn(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    net(x)[-1][0, :, cell, cell].sum().backward()
    rows = torch.nonzero(x.grad.abs().sum((0, 1, 3)) > 0).flatten()
    cols = torch.nonzero(x.grad.abs().sum((0, 1, 2)) > 0).flatten()
    assert rows.numel() and rows.numel() == cols.numel()
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize("kernel_size, blocks, patch", [(1, 1, 8), (1, 2, 4), (3, 1, 8), (3, 2, 4), (5, 1, 4)])
def test_receptive_field_is_what_it_states(kernel_size: int, blocks: int, patch: int) -> None:
    torch.manual_seed(0)
    net = LocalNet(output_stride=patch, width=8, blocks=blocks, kernel_size=kernel_size).double()
    side = net.receptive_field
    cells = side // patch + 4
    assert _support_side(net, cells * patch, cells // 2) == side
    if kernel_size == 1:
        assert side == patch


def test_shapes_follow_feature_info() -> None:
    net = create_backbone("localnet", output_stride=8, width=16, out_indices=(0, 2, 4))
    feats = net(torch.randn(2, 3, 65, 97))
    assert [tuple(f.shape) for f in feats] == [(2, 16, 9, 13)] * 3
    assert net.feature_info.reduction() == [8, 8, 8] and net.feature_info.channels() == [16, 16, 16]
    assert net.feature_info.module_names() == ["stem", "layer2", "layer4"]


def test_models_build_on_it() -> None:
    for name, kw in (("fcn", {}), ("generic", {"context": "ema"}), ("danet", {})):
        model = create_model(name, 3, backbone="localnet", channels=16, backbone_kw={"width": 16}, **kw).eval()
        out = model(torch.randn(1, 3, 40, 48))
        out = out["out"] if isinstance(out, dict) else out
        assert out.shape == (1, 3, 40, 48)


@pytest.mark.parametrize("kwargs, match", [
    ({"pretrained": "w.pt"}, "no pretrained weights"),
    ({"multi_grid": (1, 2)}, "multi_grid"),
    ({"kernel_size": 2}, "odd"),
    ({"width": 0}, "width must be a positive int"),
    ({"output_stride": 8.0}, "output_stride must be a positive int"),
    ({"out_indices": (5,)}, "out_indices"),
])  # fmt: skip
def test_bad_keywords_name_what_is_wrong(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_backbone("localnet", **kwargs)
