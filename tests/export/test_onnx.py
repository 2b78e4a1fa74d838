"""ONNX / torch.export exports checked on ONNX Runtime (CPU) against eager PyTorch.

Registry-driven: every model is exported with dynamic height/width at 64x64 and verified at 64x64 and
49x51 (inside :func:`segattn.export`, which raises when a check fails). CI runs the representative set
(every model with adaptive pooling, one model per module family: ``tests/export/sets.py``, about
20 s of CPU each); ``SEGATTN_EXPORT_ALL=1`` runs all models. The mechanism tests use a
small pooling network, whose exports take seconds.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import segattn
from segattn.export import (
    ExportError,
    adaptive_pooling_calls,
    second_size,
    size_generic_adaptive_avg_pool2d,
)
from segattn.export import export as export_model
from tests.export.sets import ALL_MODELS, RUN_ALL, TINY, representative_models
from tests.helpers import perturb_

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# fcn has no context module: its backbone is in every other export and tests/export/test_cli.py checks
# it on ORT at a fixed size, so CI skips its dynamic export (about 20 s)
CI_MODELS = [m for m in representative_models() if m != "fcn"]


class PoolNet(nn.Module):
    """conv -> [x, upsample(adaptive_avg_pool(x, bins))] -> 1x1 classifier: PSPNet in miniature."""

    def __init__(self, bins: int = 3, kind: str = "avg") -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.classifier = nn.Conv2d(8, 3, 1)
        self.bins, self.kind = bins, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.stem(x))
        pool = F.adaptive_avg_pool2d if self.kind == "avg" else F.adaptive_max_pool2d
        p = pool(f, self.bins)
        up = F.interpolate(p, size=f.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([f, up], 1))


@pytest.mark.parametrize("size", [(7, 13), (65, 97), (5, 5), (3, 2), (12, 18)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6, (2, 5), (None, 3)])
def test_size_generic_pooling_equals_adaptive_avg_pool2d(size, bins) -> None:
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    torch.testing.assert_close(size_generic_adaptive_avg_pool2d(x, bins), F.adaptive_avg_pool2d(x, bins),
                               rtol=1e-12, atol=1e-12)


def test_pooling_calls_name_the_layers() -> None:
    calls = adaptive_pooling_calls(segattn.create_model("pspnet", 3, **TINY))
    assert {str(c.output_size) for c in calls} == {"1", "2", "3", "6"}
    assert all(c.layer == "head.context" for c in calls)
    assert [c.is_global for c in calls] == [True, False, False, False]


def test_adaptive_pooling_models_listed() -> None:
    """The CI set must hold every model that pools adaptively (tests/export/sets.py lists them)."""
    pooling = sorted(n for n in ALL_MODELS if adaptive_pooling_calls(segattn.create_model(n, 3, **TINY)))
    assert pooling == ["ann", "apcnet", "deeplabv3", "dmnet", "pspnet"]
    assert set(pooling) <= set(CI_MODELS)


def test_dynamic_export_with_generic_pooling_is_right_at_other_sizes(tmp_path) -> None:
    net = perturb_(PoolNet(bins=3))
    result = export_model(net, tmp_path / "pool.onnx", size=(20, 28), dynamic=True, check_sizes=["9x31"])
    assert [c.size for c in result.checks] == [(20, 28), second_size((20, 28)), (9, 31)]
    assert all(c.ok and c.max_abs_err < 1e-4 for c in result.checks)
    assert result.generic_pooling == ["(model) (adaptive average pooling to 3)"]


def test_native_pooling_bakes_in_the_size_and_the_check_catches_it(tmp_path, monkeypatch) -> None:
    """Without the size-generic formulation the exporter fixes the bins: the check at the second size
    must fail, and no file is left behind."""
    monkeypatch.setattr(sys.modules["segattn.export"], "size_generic_adaptive_avg_pool2d", F.adaptive_avg_pool2d)
    with pytest.raises(ExportError, match="does not match|does not run"):
        export_model(PoolNet(bins=3), tmp_path / "pool.onnx", size=(20, 28), dynamic=True)
    assert list(tmp_path.iterdir()) == []


def test_refusal_names_the_layer_and_offers_a_fixed_size(tmp_path) -> None:
    model = segattn.create_model("pspnet", 3, **TINY)
    with pytest.raises(ExportError, match=r"head\.context \(adaptive average pooling to 2\).*--size 64x64 without --dynamic"):
        export_model(model, tmp_path / "psp.onnx", size=(64, 64), dynamic=True, pooling="refuse")
    with pytest.raises(ExportError, match="adaptive max pooling"):  # no size-generic form: always refused
        export_model(PoolNet(kind="max"), tmp_path / "max.onnx", size=(16, 16), dynamic=True)
    assert list(tmp_path.iterdir()) == []


def test_fixed_size_export_checks_one_size(tmp_path) -> None:
    result = export_model(PoolNet(bins=3), tmp_path / "pool.onnx", size="16x20")
    assert [c.size for c in result.checks] == [(16, 20)] and result.checks[0].ok
    assert not result.dynamic and result.opset == 20 and result.generic_pooling == []


def test_a_model_that_is_not_a_module_is_named(tmp_path) -> None:
    with pytest.raises(ExportError, match=r"export: model must be a torch.nn.Module .* got str"):
        export_model("fcn", tmp_path / "m.onnx", size=32)  # was: AttributeError "'str' object has no attribute 'eval'"
    assert not (tmp_path / "m.onnx").exists()


def test_exporter_failures_are_one_export_error(tmp_path) -> None:
    # ONNX has no translation for adaptive max pooling to a grid, even at a fixed size
    with pytest.raises(ExportError, match="cannot be exported to ONNX opset 20: .*adaptive_max_pool2d"):
        export_model(PoolNet(kind="max"), tmp_path / "max.onnx", size="16x20")
    assert list(tmp_path.iterdir()) == []


def test_pt2_dynamic_export(tmp_path) -> None:
    net = perturb_(PoolNet(bins=2)).eval()
    result = export_model(net, tmp_path / "pool.pt2", format="pt2", size=(16, 24), dynamic=True)
    assert result.format == "pt2" and [c.ok for c in result.checks] == [True, True]
    loaded = torch.export.load(str(tmp_path / "pool.pt2")).module()
    x = torch.randn(1, 3, 19, 30)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=1e-5, atol=1e-5)


def test_opset23_uses_the_fused_attention_op(tmp_path) -> None:
    import onnx

    block = perturb_(segattn.create_module("nonlocal", in_channels=8))
    result = export_model(block, tmp_path / "nl.onnx", size=(9, 11), dynamic=True, opset=23)
    assert result.opset == 23 and all(c.ok for c in result.checks)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "nl.onnx")).graph.node}
    assert "Attention" in ops and "Softmax" not in ops


def test_bad_arguments_fail_before_any_work(tmp_path) -> None:
    net = PoolNet()
    (tmp_path / "exists.onnx").write_bytes(b"keep")
    with pytest.raises(ExportError, match="already exists; pass --overwrite"):
        export_model(net, tmp_path / "exists.onnx")
    assert (tmp_path / "exists.onnx").read_bytes() == b"keep"
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export_model(net, tmp_path / "a.x", format="tflite")
    with pytest.raises(ExportError, match="opset must lie in 18..23"):
        export_model(net, tmp_path / "a.onnx", opset=17)
    for bad in ("20", 20.0, True):  # a string or float opset was taken as int(opset), a bool as 1
        with pytest.raises(ExportError, match=r"opset must be an integer in 18..23, got"):
            export_model(net, tmp_path / "a.onnx", opset=bad)
    with pytest.raises(ExportError, match="HxW"):
        export_model(net, tmp_path / "a.onnx", size="big")
    with pytest.raises(ExportError, match="at least 8x8"):
        export_model(net, tmp_path / "a.onnx", size=(4, 64))
    with pytest.raises(ExportError, match="ONNX exports only"):
        export_model(net, tmp_path / "a.pt2", format="pt2", opset=20)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_exports_dynamically_and_matches_on_ort(name: str, tmp_path) -> None:
    if name not in CI_MODELS and not RUN_ALL:
        pytest.skip("CI runs the representative set; SEGATTN_EXPORT_ALL=1 runs every model")
    model = perturb_(segattn.create_model(name, 3, **TINY))
    result = export_model(model, tmp_path / f"{name}.onnx", size=(64, 64), dynamic=True)
    assert [c.size for c in result.checks] == [(64, 64), (49, 51)]
    assert all(c.ok for c in result.checks), result
    assert bool(result.generic_pooling) == (name in ("ann", "apcnet", "dmnet", "pspnet"))
