"""The config's error lines, word for word: the key, the whole value given, the accepted type or range
(both bounds), a did-you-mean; pydantic validates, the wording stays segattn's."""

from __future__ import annotations

import pytest

from segattn.engine.config import Config, ConfigError, config_from_dict, load_config


@pytest.mark.parametrize("override, message", [
    ("eval.scales=[0]", "config key eval.scales: got [0], expected a non-empty list of numbers, each in (0, 8]"),
    ("optim.momentum=1.5", "config key optim.momentum: got 1.5, expected a number in [0, 1)"),
    ("schedule.iters=4.7", "config key schedule.iters: got 4.7, expected an integer >= 1"),
    ("schedule.iters=true", "config key schedule.iters: got True, expected an integer >= 1"),
    ("train.threads=0", "config key train.threads: got 0, expected an integer >= 1, or null"),
    ("train.device=gpu", "config key train.device: got 'gpu', expected 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps'"),
    ("data.crop_size=[64, 64, 3]", "config key data.crop_size: got [64, 64, 3], expected a positive integer or "
                                   "[h, w] of positive integers, or null"),
    ("name=''", "config key name: got '', expected a non-empty string"),
    ("optim.name=adam", "config key optim.name: got 'adam', expected one of 'sgd', 'adamw' (did you mean 'adamw'?)"),
    ("model.kwargs=3", "config key model.kwargs: got 3, expected a mapping (key: value, ...)"),
    ("data=3", "config section data: got 3, expected a mapping (key: value, ...)"),
    ("train.wrok_dir=x", "unknown config key 'train.wrok_dir' (did you mean 'train.work_dir'?); accepted in train: "),
])
def test_message(override, message) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(message), str(err.value)


def test_values_normalised_as_before() -> None:
    cfg = config_from_dict({"schedule": {"iters": "2e3"}, "eval": {"flip": "no"}, "train": {"threads": "none"},
                            "data": {"crop_size": 64}, "model": {"kwargs": None},
                            "loss": {"class_weight": ["1", 2]}})
    assert cfg.schedule.iters == 2000 and type(cfg.schedule.iters) is int and cfg.eval.flip is False
    assert cfg.train.threads is None and cfg.data.crop_size == [64, 64] and cfg.model.kwargs == {}
    assert cfg.loss.class_weight == [1.0, 2.0]
    with pytest.raises(ConfigError, match="data.mean"):
        config_from_dict({"data": {"mean": [1, 2, float("nan")]}})
    assert Config().to_dict() == config_from_dict({}).to_dict()  # defaults are valid and plain data
    assert "optim" in Config.model_json_schema()["properties"]
