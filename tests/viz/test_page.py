"""The report page in a real headless Chromium (Debian's ``chromium`` package; .ci/run installs it).

One browser launch loads the page from disk (no server, no network), dumps the DOM after the
scripts ran and takes a screenshot: the script must report every map drawn, the console must stay
silent (the page logs only errors), and the screenshot must show the pictures (coloured pixels).
Without Chromium the test is skipped, unless SEGATTN_REQUIRE_BROWSER=1 (CI) makes that a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import segattn
from segattn.viz.run import Item, visualize
from tests.helpers import perturb_
from tests.viz.conftest import scene

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--window-size=1100,1300"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("SEGATTN_REQUIRE_BROWSER") == "1":
            pytest.fail("SEGATTN_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path


def make_page(tmp_path) -> tuple:
    torch.manual_seed(0)
    model = perturb_(segattn.create_model("ccnet", num_classes=3, backbone="resnet18c", output_stride=16,
                                          channels=16)).eval()
    img = scene(96, 128)
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        pred = model(x).argmax(1)[0].numpy()
    gt = np.zeros_like(pred)
    gt[32:] = 1
    palette = [(128, 64, 128), (70, 130, 180), (220, 20, 60)]
    written = visualize(model, [Item("scene", x, img, pred, gt)], palette, str(tmp_path), "page test")
    return written[-1], 2  # report.html; ccnet R=2 gives two clickable views


def colourful_fraction(path) -> float:
    hsv = np.asarray(Image.open(path).convert("HSV")).astype(np.float64)
    return float(((hsv[..., 1] > 60) & (hsv[..., 2] > 40)).mean())


def test_page_loads_without_console_errors_and_shows_images(tmp_path):
    browser = chromium()
    page, views = make_page(tmp_path)
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    proc = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", "--dump-dom",
                           f"file://{page}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    status = re.search(r'<p id="status"[^>]*>([^<]*)', proc.stdout)
    assert status, proc.stdout[:500]
    assert status.group(1).startswith(f"ready: {views} maps drawn"), status.group(1)
    assert proc.stdout.count("<canvas") == views
    assert shot.exists()
    assert colourful_fraction(shot) > 0.05  # the pictures are on screen, not a blank page
