"""``segattn export`` shows what concerns the user: its result line, not torch's own chatter (the ONNX
registry's "torchvision is not installed" notes, deprecations inside torch, the pt2 loader's complaint
about a temporary file name), and refuses an output name that does not fit the format."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

TINY = ["--model", "fcn", "--num-classes", "3", "--kw", "backbone=resnet18", "--kw", "channels=8", "--size", "32x32"]


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_prints_its_result_and_nothing_of_torch(fmt, tmp_path):
    out = tmp_path / f"m.{fmt}"
    env = {**os.environ, "PYTHONWARNINGS": "default", "OMP_NUM_THREADS": "1"}  # every warning would show
    proc = subprocess.run([sys.executable, "-m", "segattn", "export", *TINY, "--format", fmt, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"{out}: {fmt}") and "- ok" in proc.stdout
    for noise in ("torchvision is not installed", "FutureWarning", "DeprecationWarning", "Expect archive file",
                  "Unable to load package"):
        assert noise not in proc.stderr, proc.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == [out.name]  # no temporary left beside it
