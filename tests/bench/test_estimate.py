"""``segattn bench`` estimates memory and time before it starts: a step that cannot fit is refused (or, among
several modules, skipped and reported) with the estimate; ``--baseline`` names a module that is benched."""

from __future__ import annotations

import warnings

import pytest
import torch

from segattn.api import create_module
from segattn.bench import estimate
from segattn.bench.measure import BenchSetting
from segattn.cli import main


@pytest.mark.parametrize("name", ["nonlocal", "ema", "ppm"])
def test_estimate_is_within_a_small_factor_of_the_tracked_peak(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setting = BenchSetting(in_channels=32, height=80, width=72)
        guess = estimate.estimate_step(name, setting, rate_gmacs=10.0)
        tracked = estimate._forward_peak(create_module(name, 32).eval(), 32, 80, 72, torch.float32)
    assert tracked / 3 < guess.bytes < tracked * 3, (guess.bytes, tracked)
    assert guess.seconds > 0


@pytest.mark.parametrize("name", ["nonlocal", "danet_pam", "ccnet"])
def test_extrapolation_from_the_small_probes(name):
    # probes at 16 and 32 pixels on the long side; 128x96 is 12x their larger pixel count
    setting = BenchSetting(in_channels=16, height=128, width=96)
    guess = estimate.estimate_step(name, setting, rate_gmacs=10.0).bytes
    tracked = estimate._forward_peak(create_module(name, 16).eval(), 16, 128, 96, torch.float32)
    assert tracked / 3 < guess < tracked * 3, (guess, tracked)


def test_a_step_that_cannot_fit_is_refused_with_the_estimate(capsys):
    assert main(["bench", "nonlocal", "--size", "16384", "--batch", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segattn bench: error: bench at 64x512x16384x16384: no module fits")
    assert "nonlocal, needs about" in err[0] and "GiB (estimated)" in err[0]


def test_modules_that_do_not_fit_are_skipped_and_reported(monkeypatch, capsys):
    sizes = {}

    def fake_estimate(name, setting, rate):  # noqa: ANN001, ANN202
        sizes[name] = 2**40 if name == "nonlocal" else 2**20
        return estimate.StepEstimate(name, sizes[name], 0.5)

    monkeypatch.setattr(estimate, "estimate_step", fake_estimate)
    monkeypatch.setattr(estimate, "available_bytes", lambda device: 2.0**30)
    assert main(["bench", "nonlocal", "ema", "--channels", "8", "--size", "8", "--rounds", "1"]) == 0
    out, err = capsys.readouterr()
    assert "nonlocal skipped: needs about 1024.0 GiB (estimated), 1.0 GiB free" in err
    assert "estimated under 1 s" in out and "| ema |" in out
    assert "not run: needs about 1024.0 GiB" in out  # the skipped module's row says why


def test_an_explicit_baseline_is_benched_and_gives_the_ratios(capsys):
    assert main(["bench", "ema", "--channels", "8", "--size", "8", "--rounds", "1", "--baseline", "glore"]) == 0
    out = capsys.readouterr().out
    assert "| glore |" in out and "time ratio" in out
    assert main(["bench", "ema", "--channels", "8", "--size", "8", "--rounds", "1", "--baseline", "zzz"]) == 2
    assert "--baseline 'zzz' is not a registered module" in capsys.readouterr().err
