"""The config reader evaluates data only: anything that could run code is refused with its line."""

from __future__ import annotations

import pytest

from segattn.convert.mmconfig import ConfigError, get, parse_config


def test_plain_data_and_earlier_names() -> None:
    text = """'''a docstring'''
norm_cfg = dict(type='SyncBN', requires_grad=True)
crop_size = (512, 1024)
scales = [0.5, -1.0, +2]
model = dict(backbone=dict(norm_cfg=norm_cfg, dilations=tuple([1, 1, 2, 4])), test_cfg=dict(mode='whole'),
             extra={'a': 1, **dict(b=2)}, none=None, flags={True, False})
both = dict(model, type='EncoderDecoder')
"""
    cfg = parse_config(text)
    assert cfg["crop_size"] == (512, 1024) and cfg["scales"] == [0.5, -1.0, 2]
    assert get(cfg, "model.backbone.norm_cfg.type") == "SyncBN"
    assert get(cfg, "model.backbone.dilations") == (1, 1, 2, 4)
    assert cfg["model"]["extra"] == {"a": 1, "b": 2} and cfg["both"]["type"] == "EncoderDecoder"
    assert get(cfg, "model.missing.key", "default") == "default"


@pytest.mark.parametrize("text, message", [
    ("import os\n", "line 1: an import"),
    ("x = 1\nfrom os import system\n", "line 2: an import"),
    ("x = __import__('os').system('true')\n", "line 1: a Call expression|a call"),
    ("x = eval('1')\n", "a call of eval"),
    ("x = os.path\n", "line 1: a Attribute expression"),
    ("x = y\n", "name 'y' is not assigned earlier"),
    ("x = 1 + 2\n", "a BinOp expression"),
    ("x = [i for i in range(3)]\n", "a ListComp expression"),
    ("def f():\n    pass\n", "a FunctionDef statement"),
    ("a, b = 1, 2\n", "a Assign statement"),
    ("x = -'a'\n", "a sign applied to something other than a number"),
    ("_base_ = ['../_base_/models/fcn_r50-d8.py']\n", "inherits from _base_ files"),
    ("x = dict(\n", "not valid Python config text"),
])
def test_refused_with_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text, source="cfg.py")


def test_not_text() -> None:
    with pytest.raises(ConfigError, match="expected config text"):
        parse_config(b"x = 1")  # type: ignore[arg-type]


MMCV1_TAIL = """norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(type='EncoderDecoder', backbone=dict(norm_cfg=norm_cfg), test_cfg=dict(mode='whole'))
img_norm_cfg = dict(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], to_rgb=False)
data = dict(train=dict(pipeline=[dict(type='Resize', ratio_range=make_range())]),
            test=dict(type='CityscapesDataset', pipeline=[dict(type='Normalize', **img_norm_cfg)]))
gpu_ids = range(0, 4)
hooks = [__import__('os').system('echo never')]
"""


def test_only_the_asked_keys_are_evaluated() -> None:
    """mmseg 0.x writes ``gpu_ids = range(0, 4)`` after every distributed run: unread lines do no harm."""
    with pytest.raises(ConfigError, match="line 4: a call of make_range"):
        parse_config(MMCV1_TAIL)  # everything: refused, naming the line
    with pytest.raises(ConfigError, match="line 6: a call of range"):
        parse_config(MMCV1_TAIL, keys=("gpu_ids",))
    cfg = parse_config(MMCV1_TAIL, keys=("model", "img_norm_cfg", "data.test.pipeline", "data.test.type",
                                         "crop_size", "model.missing"))
    assert get(cfg, "model.backbone.norm_cfg.type") == "SyncBN" and get(cfg, "model.test_cfg.mode") == "whole"
    assert cfg["img_norm_cfg"]["to_rgb"] is False and "crop_size" not in cfg and "gpu_ids" not in cfg
    assert cfg["data"] == {"test": {"type": "CityscapesDataset",
                                    "pipeline": [{"type": "Normalize", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                                                  "to_rgb": False}]}}  # data.train (a call) never evaluated
    with pytest.raises(ConfigError, match="line 4: a call of make_range"):
        parse_config(MMCV1_TAIL, keys=("data.train",))
    merged = "base = dict(a=dict(b=1))\nboth = dict(base, c=2)\nlater = dict(**base)\n"
    assert parse_config(merged, keys=("both.a.b", "later.a", "both.c")) == {"both": {"a": {"b": 1}, "c": 2},
                                                                           "later": {"a": {"b": 1}}}
    assert parse_config("x = 1\nx = dict(y=x)\n", keys=("x.y",)) == {"x": {"y": 1}}  # the earlier x


def test_statements_are_refused_with_the_way_out() -> None:
    with pytest.raises(ConfigError, match=r"line 2: an import; a merged config holds assignments only.*"
                                          r"--config FILE.*mmcv\.Config\.fromfile"):
        parse_config("x = 1\nimport os\n", keys=("x",))
