import json

import pytest

from segattn.engine.config import apply_overrides, list_configs, load_config


def test_yaml_base_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {name: fcn, backbone: resnet18}\nschedule: {iters: 100}\n")
    (tmp_path / "run.yaml").write_text("_base_: base.yaml\nmodel: {name: ccnet}\noptim: {lr: 0.02}\n")
    cfg = load_config(str(tmp_path / "run.yaml"), ["schedule.iters=7", "data.crop_size=[32, 48]",
                                                    "model.kwargs.recurrence=3", "train.amp=true"])
    assert cfg.model.name == "ccnet" and cfg.model.backbone == "resnet18"
    assert cfg.optim.lr == 0.02 and cfg.schedule.iters == 7
    assert cfg.data.crop_size == [32, 48] and cfg.model.kwargs == {"recurrence": 3} and cfg.train.amp is True


def test_json_config_and_unknown_keys(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"optim": {"lr": 0.5}}))
    assert load_config(str(tmp_path / "a.json")).optim.lr == 0.5
    with pytest.raises(KeyError, match="lr_rate"):
        load_config(str(tmp_path / "a.json"), ["optim.lr_rate=1"])
    with pytest.raises(KeyError, match="optimizer"):
        load_config(None, ["optimizer.lr=1"])
    with pytest.raises(ValueError, match="key.sub=value"):
        apply_overrides({}, ["noequals"])
    with pytest.raises(FileNotFoundError):
        load_config(str(tmp_path / "missing.yaml"))


def test_shipped_configs_load():
    names = list_configs()
    assert names, "no shipped configs"
    for name in names:
        cfg = load_config(name)
        assert cfg.schedule.iters > 0 and cfg.model.name, name


def test_every_model_has_shipped_configs():
    import segattn

    names = set(list_configs())
    models = {load_config(n).model.name for n in names}
    assert models <= set(segattn.list_models()), models - set(segattn.list_models())
    for model in set(segattn.list_models()) - {"generic"}:
        for folder in ("camvid", "cityscapes", "ade20k", "voc12aug"):
            assert any(n.startswith(f"{folder}/{model}_") for n in names), f"no {folder} config for {model}"
