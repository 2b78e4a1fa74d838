"""The zoo manifest, `segattn models --zoo`, and download + convert through a local HTTP server."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import threading

import pytest
import torch

import segattn
from segattn.cli import main
from segattn.convert import zoo
from segattn.convert.mmconfig import parse_config
from segattn.convert.mmseg import architecture_from_config
from tests.convert.fixtures import expected, record, write_checkpoint
from tests.convert.mmseg_synth import synth_input

HEADS = {"fcn", "pspnet", "deeplabv3", "nonlocal", "danet", "ccnet", "isanet", "ann", "apcnet", "emanet", "psanet",
         "encnet", "dmnet", "gcnet", "dnlnet", "ocrnet"}


def test_manifest_covers_every_head_and_each_entry_converts() -> None:
    entries = zoo.zoo_entries()
    assert {e.model for e in entries} == HEADS
    assert len({e.name for e in entries}) == len(entries)
    for e in entries:
        assert e.url.startswith("https://download.openmmlab.com/") and len(e.sha256_prefix or "") == 8
        arch = architecture_from_config(e.config)  # every listed entry has a supported architecture
        assert arch.name == e.model
    ade_psa = [e for e in entries if e.model == "psanet" and e.dataset == "ADE20K"]
    assert ade_psa and all(e.config["model"]["decode_head"]["mask_size"] == [66, 66] for e in ade_psa)
    from pathlib import Path

    import yaml

    ours = Path(zoo.__file__).parent.parent / "configs" / "ade20k" / "psanet_r50-d8_512x512_160k_ade20k.yaml"
    assert yaml.safe_load(ours.read_text())["model"]["kwargs"]["context_kw"]["mask_size"] == [66, 66]
    city_psa = [e for e in entries if e.model == "psanet" and e.dataset == "Cityscapes"]
    assert all(e.config["model"]["decode_head"]["mask_size"] == [97, 97] for e in city_psa)


def test_models_zoo_lists(capsys) -> None:
    assert main(["models", "--zoo", "emanet"]) == 0
    out = capsys.readouterr().out
    assert "emanet_r50-d8_4xb2-80k_cityscapes-512x1024" in out and "(4 entries" in out
    assert main(["models", "--zoo", "no-such-model"]) == 2


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: D401 - keep the test output clean
        pass


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _entry_for(name: str, root, base_url: str, corrupt: bool = False):
    rec = record(name)
    path = write_checkpoint(rec, root / f"{name}.pth")
    torch.save({"state_dict": torch.load(path, weights_only=True)["state_dict"]}, path)  # no meta: manifest config
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    cfg = parse_config(rec["cfg"])
    entry = zoo.ZooEntry(name=name, method="pspnet", model="pspnet", backbone="R-50-D8", dataset="Cityscapes",
                         crop_size=[512, 1024], iterations=80000, miou=78.55, miou_ms_flip=79.79,
                         url=f"{base_url}/{name}.pth", sha256_prefix="00000000" if corrupt else digest,
                         config={"model": cfg["model"], "dataset_type": "CityscapesDataset", "crop_size": [512, 1024]})
    return entry


def test_download_and_convert_through_a_local_server(server, tmp_path, monkeypatch) -> None:
    root, base = server
    name = "pspnet_r50-d8_4xb2-80k_cityscapes-512x1024"
    entry = _entry_for(name, root, base)
    monkeypatch.setattr(zoo, "_manifest", lambda: [entry])
    out = tmp_path / "psp"
    cache = tmp_path / "cache"
    assert main(["convert", "mmseg", name, "--out", str(out), "--cache-dir", str(cache), "--quiet"]) == 0
    assert (cache / f"{name}.pth").is_file()
    model = segattn.from_pretrained(out).double()
    assert model.pretrained_config["metrics"]["mIoU"] == pytest.approx(0.7855)
    assert "78.55" in (out / "README.md").read_text()
    h, w = record(name)["sizes"][0]
    with torch.no_grad():
        got = model(synth_input(name, (h, w)))
    ref = torch.from_numpy(expected(name)[f"logits_{h}x{w}"]).double()
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-6
    # a mirror replaces download.openmmlab.com
    monkeypatch.setenv("SEGATTN_MMSEG_MIRROR", "http://mirror.example")
    mirrored = dataclasses.replace(entry, url="https://download.openmmlab.com/v0.5/x.pth")
    assert zoo.resolved_url(mirrored) == "http://mirror.example/v0.5/x.pth"


def test_checksum_mismatch_is_refused(server, tmp_path, monkeypatch, capsys) -> None:
    root, base = server
    name = "fcn_r50-d8_4xb2-80k_cityscapes-512x1024"
    entry = _entry_for(name, root, base, corrupt=True)
    monkeypatch.setattr(zoo, "_manifest", lambda: [entry])
    cache = tmp_path / "cache"
    rc = main(["convert", "mmseg", name, "--out", str(tmp_path / "o"), "--cache-dir", str(cache), "--quiet"])
    assert rc == 2
    assert "sha256 mismatch" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not any(cache.glob("*.pth"))
