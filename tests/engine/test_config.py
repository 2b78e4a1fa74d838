import json

import pytest

from segattn.engine.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    list_configs,
    load_config,
)


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
    with pytest.raises(ConfigError, match="lr_rate"):
        load_config(str(tmp_path / "a.json"), ["optim.lr_rate=1"])
    with pytest.raises(ConfigError, match=r"'optimizer' \(did you mean 'optim'\?\)"):
        load_config(None, ["optimizer.lr=1"])
    with pytest.raises(ConfigError, match=r"'train.wrok_dir' \(did you mean 'train.work_dir'\?\)"):
        load_config(None, ["train.wrok_dir=x"])
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


def test_scientific_notation_in_yaml_and_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("optim: {lr: 1e-3, weight_decay: 5E-4}\nschedule: {iters: 2e3, min_lr: 1.0e-6}\n"
                                     "model: {kwargs: {eps: 1e-5}}\n")
    cfg = load_config(str(tmp_path / "c.yaml"))
    assert cfg.optim.lr == 1e-3 and cfg.optim.weight_decay == 5e-4 and cfg.schedule.min_lr == 1e-6
    assert cfg.schedule.iters == 2000 and type(cfg.schedule.iters) is int
    assert cfg.model.kwargs == {"eps": 1e-5}  # free-form keyword arguments too
    cfg = load_config(None, ["optim.lr=1e-3", "schedule.iters=1e2", "model.kwargs.eps=2e-5"])
    assert cfg.optim.lr == 1e-3 and cfg.schedule.iters == 100 and cfg.model.kwargs["eps"] == 2e-5
    assert cfg.optim.lr * 0.5 == 5e-4  # a number, not text


@pytest.mark.parametrize("override, key", [
    ("schedule.iters=0", "schedule.iters"),
    ("schedule.iters=-3", "schedule.iters"),
    ("schedule.iters=4.7", "schedule.iters"),
    ("schedule.iters=true", "schedule.iters"),
    ("schedule.warmup_iters=-1", "schedule.warmup_iters"),
    ("eval.scales=[0]", "eval.scales"),
    ("eval.scales=[-1, 1]", "eval.scales"),
    ("eval.scales=[100]", "eval.scales"),
    ("eval.scales=[]", "eval.scales"),
    ("eval.max_samples=0", "eval.max_samples"),
    ("eval.mode=sliding", "eval.mode"),
    ("eval.stride=[0, 0]", "eval.stride"),
    ("eval.crop_size=0", "eval.crop_size"),
    ("data.crop_size=[0, 64]", "data.crop_size"),
    ("data.crop_size=[64, 64, 3]", "data.crop_size"),
    ("data.resize=[-1, 5]", "data.resize"),
    ("data.std=[58.4, 0, 57.4]", "data.std"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.num_workers=-1", "data.num_workers"),
    ("data.flip_prob=1.5", "data.flip_prob"),
    ("data.scale_range=[2.0, 0.5]", "data.scale_range"),
    ("data.mean=[0, 0]", "data.mean"),
    ("loss.class_weight=[1, -2]", "loss.class_weight"),
    ("loss.class_weight=[0, 0]", "loss.class_weight"),
    ("loss.class_weight=balanced", "loss.class_weight"),
    ("loss.name=cross_entropy", "loss.name"),
    ("optim.lr=0", "optim.lr"),
    ("optim.lr=fast", "optim.lr"),
    ("optim.lr=.nan", "optim.lr"),
    ("optim.name=adam", "optim.name"),
    ("optim.momentum=1.5", "optim.momentum"),
    ("train.amp='maybe'", "train.amp"),
    ("train.amp=2", "train.amp"),
    ("train.device=gpu", "train.device"),
    ("train.threads=0", "train.threads"),
    ("train.log_interval=0", "train.log_interval"),
    ("train.grad_clip=-1", "train.grad_clip"),
    ("train.amp_dtype=fp8", "train.amp_dtype"),
    ("model.output_stride=12", "model.output_stride"),
    ("model.kwargs=3", "model.kwargs"),
    ("name=''", "name"),
])
def test_bad_values_name_key_value_and_expectation(override, key):
    with pytest.raises(ConfigError) as err:
        load_config("synthetic/fcn_r18_synthetic.yaml", [override])
    msg = str(err.value)
    assert key in msg and "expected" in msg and "synthetic/fcn_r18_synthetic.yaml" in msg, msg


def test_string_booleans_parse_by_meaning():
    for text, value in (("no", False), ("'no'", False), ("'False'", False), ("off", False), ("'yes'", True),
                        ("true", True), ("'ON'", True)):
        assert load_config(None, [f"train.amp={text}"]).train.amp is value, text
    assert config_from_dict({"eval": {"flip": "no"}}).eval.flip is False  # JSON / quoted YAML text


def test_sizes_normalised_and_slide_needs_sizes():
    cfg = load_config(None, ["data.crop_size=64", "eval.mode=slide", "eval.crop_size=[32]", "eval.stride=[16, 24]"])
    assert cfg.data.crop_size == [64, 64] and cfg.eval.crop_size == [32, 32] and cfg.eval.stride == [16, 24]
    with pytest.raises(ConfigError, match="eval.crop_size.*slide mode"):
        load_config(None, ["eval.mode=slide", "eval.stride=[16, 16]"])
    with pytest.raises(ConfigError, match="eval.stride.*slide mode"):
        load_config(None, ["eval.mode=slide", "eval.crop_size=[16, 16]"])
    with pytest.raises(ConfigError, match=r"eval.stride: got \[16, 24\], expected at most eval.crop_size \[16, 16\]"):
        load_config(None, ["eval.mode=slide", "eval.crop_size=[16, 16]", "eval.stride=[16, 24]"])  # was accepted


def test_rules_between_keys():
    with pytest.raises(ConfigError, match="data.mean and data.std"):
        load_config(None, ["data.mean=[0.5]"])
    with pytest.raises(ConfigError, match="exclude each other"):
        load_config(None, ["train.resume=auto", "train.overwrite=true"])
    with pytest.raises(ConfigError, match=r"schedule.min_lr: got 0.1, expected at most optim.lr \(0.01\)"):
        load_config(None, ["optim.lr=0.01", "schedule.min_lr=0.1"])
    assert load_config(None, ["optim.lr=0.01", "schedule.min_lr=0.01"]).schedule.min_lr == 0.01


def test_yaml_and_json_syntax_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: fcn\n  kwargs: {channels: 8\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: YAML syntax error at line \d+"):
        load_config(str(bad))
    bad = tmp_path / "bad.json"
    bad.write_text('{"optim": {"lr": 0.1,}}')
    with pytest.raises(ConfigError, match=r"bad.json: JSON syntax error at line 1"):
        load_config(str(bad))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(tmp_path / "list.yaml"))


def test_bad_base_folder_and_repeated_keys_are_named(tmp_path):
    (tmp_path / "base.yaml").write_text("_base_: [other.yaml]\n")  # was: unsupported operand type(s) for /
    with pytest.raises(ConfigError, match=r"base.yaml: _base_ must name one config file .* got \['other.yaml'\]"):
        load_config(str(tmp_path / "base.yaml"))
    with pytest.raises(ConfigError, match=r"is a folder; expected a YAML or JSON config file"):  # was: not found
        load_config(str(tmp_path))
    (tmp_path / "dup.yaml").write_text("model: {name: fcn}\nschedule: {iters: 5}\nmodel: {name: pspnet}\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: .*line 3.*duplicate key 'model' \(first at line 1\)"):
        load_config(str(tmp_path / "dup.yaml"))  # YAML kept the last 'model' silently
    (tmp_path / "empty.yaml").write_text("# nothing set yet\n")  # was: every default run silently
    with pytest.raises(ConfigError, match=r"empty.yaml: the config file is empty; expected a mapping of sections"):
        load_config(str(tmp_path / "empty.yaml"))
    (tmp_path / "dup.json").write_text('{"optim": {"lr": 0.1, "lr": 0.2}}')
    with pytest.raises(ConfigError, match=r"dup.json: duplicate key\(s\) \['lr'\]"):
        load_config(str(tmp_path / "dup.json"))


def test_stored_configs_round_trip_and_old_never_read_key():
    cfg = load_config("camvid/emanet_r18c_camvid_cpu.yaml")
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    old = cfg.to_dict()
    old["eval"]["transforms"] = True  # written by earlier versions, never read: dropped
    assert config_from_dict(old) == cfg
    old["eval"]["transforms"] = False
    with pytest.raises(ConfigError, match="eval.transforms"):
        config_from_dict(old)


def test_validate_checks_hand_built_configs():
    cfg = Config()
    cfg.schedule.iters = 0
    with pytest.raises(ConfigError, match="schedule.iters"):
        cfg.validate()
    cfg = Config()
    cfg.optim.lr = "1e-3"
    assert cfg.validate().optim.lr == 1e-3

