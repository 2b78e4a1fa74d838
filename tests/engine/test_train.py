import json
import math
import os
import signal

import pytest
import torch

from segattn.engine import build
from segattn.engine.checkpoint import load_checkpoint
from segattn.engine.config import ScheduleConfig
from segattn.engine.train import Trainer, train
from tests.engine.standins import TinySeg, ToyDataset, tiny_config


def _run(tmp, iters=6, callbacks=(), dropout=0.0, **sections):
    sections.setdefault("schedule", {})["iters"] = iters
    cfg = tiny_config(str(tmp), **sections)
    torch.manual_seed(123)
    model = TinySeg(dropout=dropout)
    summary = train(cfg, model=model, train_set=ToyDataset(10), val_set=ToyDataset(4, seed=1, augment=False),
                    callbacks=callbacks)
    return model, summary


def test_training_lowers_loss_and_calls_hooks(tmp_path):
    model, summary = _run(tmp_path, iters=12)
    assert summary["iteration"] == 12 and not summary["interrupted"]
    assert int(model.hook_calls) == 12
    lines = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    losses = [r["loss"] for r in lines if r["kind"] == "train"]
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert {"loss_out", "loss_aux"} <= set(lines[0])
    val = [r for r in lines if r["kind"] == "val"]
    assert val and set(val[-1]["IoU"]) == {"c0", "c1", "c2"}
    assert os.path.isfile(tmp_path / "last.pt") and os.path.isfile(tmp_path / "best.pt")
    assert json.load(open(tmp_path / "summary.json"))["iteration"] == 12


def test_loss_is_weighted_sum_of_outputs(tmp_path):
    trainer = Trainer(tiny_config(str(tmp_path)))
    trainer.loss_weights = {"out": 1.0, "aux": 0.4}
    trainer.criterion = build.build_criterion(trainer.cfg.loss, 255, None)
    target = torch.randint(0, 3, (2, 5, 5))
    out = {"out": torch.randn(2, 3, 5, 5), "aux": torch.randn(2, 3, 5, 5)}
    terms = trainer.compute_loss(out, target)
    ce = torch.nn.functional.cross_entropy
    expected = ce(out["out"], target) + 0.4 * ce(out["aux"], target)
    torch.testing.assert_close(terms["loss"], expected)


def test_interrupt_then_resume_matches_uninterrupted_run(tmp_path):
    full, _ = _run(tmp_path / "full", iters=7, dropout=0.2)

    def interrupt(trainer, it):
        if it == 3:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under a backgrounded shell
    part, summary = _run(tmp_path / "part", iters=7, callbacks=[interrupt], dropout=0.2)
    assert summary["interrupted"] and summary["iteration"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    assert not torch.equal(part.cls.weight, full.cls.weight)
    resumed, summary = _run(tmp_path / "part", iters=7, dropout=0.2, train={"resume": "auto"})
    assert summary["iteration"] == 7 and not summary["interrupted"]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    ckpt = load_checkpoint(str(tmp_path / "part" / "last.pt"))
    assert ckpt["iteration"] == 7 and set(ckpt["rng"]) >= {"python", "numpy", "torch"}
    assert int(ckpt["model"]["hook_calls"]) == 7


def test_poly_schedule_with_warmup():
    s = ScheduleConfig(iters=100, power=0.9, min_lr=1e-4, warmup_iters=10, warmup_ratio=0.1)
    assert build.lr_factor(0, s, 0.01) == pytest.approx(0.1)
    assert build.lr_factor(10, s, 0.01) == pytest.approx(0.99 * (0.9**0.9) + 0.01)
    assert build.lr_factor(100, s, 0.01) == pytest.approx(0.01)
    assert build.lr_factor(5, s, 0.01) < build.lr_factor(10, s, 0.01)


def test_bf16_amp_and_grad_clip_on_cpu(tmp_path):
    model, summary = _run(tmp_path, iters=3, train={"amp": True, "grad_clip": 0.5})
    assert summary["iteration"] == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())
    rec = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")][0]
    assert "grad_norm" in rec and math.isfinite(rec["grad_norm"])


def test_adamw_and_head_lr_mult_groups():
    model = TinySeg()
    cfg = tiny_config("unused", optim={"name": "adamw", "lr": 1e-3, "head_lr_mult": 10.0, "no_decay_norm_bias": True})
    model.backbone = torch.nn.Conv2d(1, 1, 1)
    opt = build.build_optimizer(model, cfg.optim)
    assert isinstance(opt, torch.optim.AdamW)
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs == [pytest.approx(1e-3), pytest.approx(1e-2)]
    assert any(g["weight_decay"] == 0.0 for g in opt.param_groups)


def test_balanced_class_weights():
    w = build.balanced_weights(torch.tensor([100.0, 10.0, 1.0]))
    assert w == pytest.approx([0.1, 1.0, 10.0])
    assert build.balanced_weights(torch.tensor([4.0, 1.0, 0.0]), "sqrt")[2] == 1.0


@pytest.mark.parametrize("shown", [True, False])
def test_validation_progress_follows_train_progress(tmp_path, monkeypatch, shown):
    import segattn.engine.train as train_mod

    seen = []
    real = train_mod.evaluate

    def spy(*args, **kwargs):
        seen.append(kwargs.get("show_progress", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "evaluate", spy)
    _run(tmp_path, iters=2, train={"progress": shown})
    assert seen and all(s is shown for s in seen)


def test_warmup_as_long_as_the_run_warns():
    import warnings

    from segattn.engine.train import _warn_warmup

    with pytest.warns(UserWarning, match=r"schedule.warmup_iters=50 is not below schedule.iters=20"):
        _warn_warmup(50, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_warmup(19, 20)


def test_more_threads_than_cpus_warns_once_in_one_line():
    """A thread count above the machine's CPUs (a `demo --threads 10000` loaded a 2-core machine for
    minutes) is named with the count to use; within the CPU count nothing is said."""
    import os
    import warnings

    from segattn.engine.train import _warn_oversubscribed

    cpus = os.cpu_count() or 1
    with pytest.warns(UserWarning, match=rf"train.threads={cpus + 1} is more than the {cpus} CPU\(s\) here"):
        _warn_oversubscribed(cpus + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_oversubscribed(cpus)
