"""Named ImageNet weights (``open-mmlab://``, torchvision enum names, ``timm://``) through a 127.0.0.1 server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import pytest
import torch

import segattn
from segattn.checkpoints import named
from segattn.engine.config import list_configs, load_config
from segattn.models.backbones import create_backbone

OPENMMLAB_PATH = "pretrain/third_party"


class _Counting(http.server.SimpleHTTPRequestHandler):
    hits: list = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).hits.append(self.path)
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = type("Handler", (_Counting,), {"hits": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", handler.hits
    httpd.shutdown()
    httpd.server_close()


def _mmcv_v1c_state(depth: int = 18) -> dict:
    """A ResNetV1c state dict in mmcv's key layout (``stem.0`` ... ``stem.7``), random weights."""
    torch.manual_seed(3)
    ours = create_backbone(f"resnet{depth}c").state_dict()
    rename = {"stem.0.0": "stem.0", "stem.0.1": "stem.1", "stem.1.0": "stem.3", "stem.1.1": "stem.4",
              "stem.2.0": "stem.6", "stem.2.1": "stem.7"}
    out = {}
    for key, value in ours.items():
        for old, new in rename.items():
            if key.startswith(old + "."):
                key = new + key[len(old):]
        out[key] = value.clone()
    return out


def _publish(root: Path, rel: str, state: dict, tmp_path: Path) -> str:
    """Save ``state`` under ``root/rel`` with mmcv's file naming; returns the file's full sha256."""
    staging = tmp_path / "staging.pth"
    torch.save({"state_dict": state}, staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    target = root / rel.format(sha=digest[:8])
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)
    return digest


@pytest.fixture()
def manifest(tmp_path, monkeypatch):
    """Point the module at a test manifest; returns a function that writes its entries."""
    path = tmp_path / "named_weights.json"

    def write(entries: list) -> None:
        path.write_text(json.dumps({"entries": entries}))
        named._manifest.cache_clear()

    monkeypatch.setattr(named, "MANIFEST", path)
    monkeypatch.setenv("SEGATTN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SEGATTN_WEIGHTS_MIRROR", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    yield write
    named._manifest.cache_clear()


def _entry(name: str, url: str, sha: str, aliases=(), backbone="resnet18c") -> dict:
    return {"name": name, "aliases": list(aliases), "url": url, "sha256": sha, "backbone": backbone, "source": "test"}


def test_open_mmlab_name_downloads_verifies_and_loads_into_the_backbone(server, manifest, tmp_path, monkeypatch):
    root, base, hits = server
    state = _mmcv_v1c_state()
    digest = _publish(root, OPENMMLAB_PATH + "/resnet18_v1c-{sha}.pth", state, tmp_path)
    manifest([_entry("open-mmlab://resnet18_v1c", f"{named.OPENMMLAB}/{OPENMMLAB_PATH}/resnet18_v1c-{digest[:8]}.pth",
                     digest[:8])])
    monkeypatch.setenv("SEGATTN_MMSEG_MIRROR", base)
    model = segattn.create_model("fcn", 3, backbone="resnet18c", channels=8, pretrained="open-mmlab://resnet18_v1c")
    got = model.backbone.state_dict()
    torch.testing.assert_close(got["stem.0.0.weight"], state["stem.0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(got["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"], rtol=0, atol=0)
    cached = tmp_path / "home" / "weights" / f"resnet18_v1c-{digest[:8]}.pth"
    assert cached.is_file() and len(hits) == 1
    # a second build reuses the verified file: no request
    create_backbone("resnet18c", pretrained="openmmlab://resnet18_v1c")
    assert len(hits) == 1


def test_full_sha256_and_torchvision_enum_names(server, manifest, tmp_path, monkeypatch):
    root, base, hits = server
    torch.manual_seed(4)
    state = create_backbone("resnet18", features_only=False).state_dict()
    plain = {k.replace("stem.0.0", "conv1").replace("stem.0.1", "bn1"): v for k, v in state.items()}
    digest = _publish(root, "models/resnet18-{sha}.pth", plain, tmp_path)
    manifest([_entry("ResNet18_Weights.IMAGENET1K_V1", f"https://download.pytorch.org/models/resnet18-{digest[:8]}.pth",
                     digest, aliases=["torchvision://resnet18", "ResNet18_Weights.DEFAULT"], backbone="resnet18")])
    monkeypatch.setenv("SEGATTN_WEIGHTS_MIRROR", base)
    for name in ("torchvision://resnet18", "ResNet18_Weights.DEFAULT", "torchvision://ResNet18_Weights.IMAGENET1K_V1"):
        bb = create_backbone("resnet18", pretrained=name)
        torch.testing.assert_close(bb.state_dict()["stem.0.0.weight"], state["stem.0.0.weight"], rtol=0, atol=0)
    assert len(hits) == 1


def test_checksum_mismatch_is_refused_and_nothing_is_kept(server, manifest, tmp_path, monkeypatch):
    root, base, _ = server
    digest = _publish(root, OPENMMLAB_PATH + "/resnet18_v1c-{sha}.pth", _mmcv_v1c_state(), tmp_path)
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:8]
    manifest([_entry("open-mmlab://resnet18_v1c", f"{named.OPENMMLAB}/{OPENMMLAB_PATH}/resnet18_v1c-{digest[:8]}.pth",
                     wrong)])
    monkeypatch.setenv("SEGATTN_MMSEG_MIRROR", base)
    with pytest.raises(named.NamedWeightsError, match=r"open-mmlab://resnet18_v1c.*sha256 mismatch"):
        create_backbone("resnet18c", pretrained="open-mmlab://resnet18_v1c")
    assert not list((tmp_path / "home" / "weights").glob("*"))


def test_unreachable_server_names_the_weights_url_and_the_way_out(manifest, monkeypatch):
    manifest([_entry("open-mmlab://resnet18_v1c", f"{named.OPENMMLAB}/{OPENMMLAB_PATH}/resnet18_v1c-b5776b93.pth",
                     "b5776b93")])
    monkeypatch.setenv("SEGATTN_MMSEG_MIRROR", "http://127.0.0.1:9")  # discard port: connection refused
    with pytest.raises(named.NamedWeightsError) as err:
        named.download_named("open-mmlab://resnet18_v1c")
    text = str(err.value)
    assert "\n" not in text and "cannot download" in text and "SEGATTN_MMSEG_MIRROR" in text


def test_other_torchrun_ranks_download_privately_then_rename(server, manifest, tmp_path, monkeypatch):
    root, base, _ = server
    digest = _publish(root, OPENMMLAB_PATH + "/resnet18_v1c-{sha}.pth", _mmcv_v1c_state(), tmp_path)
    manifest([_entry("open-mmlab://resnet18_v1c", f"{named.OPENMMLAB}/{OPENMMLAB_PATH}/resnet18_v1c-{digest[:8]}.pth",
                     digest[:8])])
    monkeypatch.setenv("SEGATTN_MMSEG_MIRROR", base)
    monkeypatch.setenv("LOCAL_RANK", "1")
    path = named.download_named("open-mmlab://resnet18_v1c")
    assert path == tmp_path / "home" / "weights" / f"resnet18_v1c-{digest[:8]}.pth" and path.is_file()
    assert not list((tmp_path / "home" / "weights" / ".rank1").glob("*"))


def test_unknown_name_is_one_line_with_the_closest_names():
    with pytest.raises(named.NamedWeightsError, match="did you mean open-mmlab://resnet50_v1c"):
        named.resolve_pretrained("open-mmlab://resnet50_v1")
    with pytest.raises(named.NamedWeightsError, match="unknown weight name 'timm://vit_base'"):
        named.resolve_pretrained("timm://vit_base")


def test_paths_urls_and_none_pass_through_unchanged(tmp_path, monkeypatch):
    for source in (None, str(tmp_path / "w.pth"), "https://example.org/w.pth", "runs/x/best.pt", "user/repo"):
        assert named.resolve_pretrained(source) == source
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ResNet50_Weights.pth").write_bytes(b"")  # a file that looks like an enum name is a file
    assert not named.is_named("ResNet50_Weights.pth") and named.is_named("ResNet50_Weights.IMAGENET1K_V2")


# ------------------------------------------------------------------ the shipped manifest
def test_shipped_manifest_names_hashes_as_the_publishers_file_names():
    entries = named.named_weights()
    assert len(entries) >= 18
    for e in entries:
        stem = e.filename.rsplit(".", 1)[0]
        assert stem.rsplit("-", 1)[1] == e.sha256[:8], e.name  # mmcv / torchvision / timm: <name>-<sha256[:8]>.pth
        assert e.url.startswith("https://"), e.name
    expected = {
        "open-mmlab://resnet50_v1c": "resnet50_v1c-2cccc1ad.pth",
        "open-mmlab://resnet18_v1c": "resnet18_v1c-b5776b93.pth",
        "open-mmlab://resnet101_v1c": "resnet101_v1c-e67eebb6.pth",
        "torchvision://resnet50": "resnet50-0676ba61.pth",
        "ResNet50_Weights.IMAGENET1K_V1": "resnet50-0676ba61.pth",
        "ResNet50_Weights.IMAGENET1K_V2": "resnet50-11ad3fa6.pth",
        "ResNet50_Weights.DEFAULT": "resnet50-11ad3fa6.pth",
        "ResNet18_Weights.DEFAULT": "resnet18-f37072fd.pth",
        "ResNet101_Weights.IMAGENET1K_V2": "resnet101-cd907fc2.pth",
        "timm://resnet50d.ra2_in1k": "resnet50d_ra2-464e36ba.pth",
        "timm://resnet50.tv2_in1k": "resnet50-11ad3fa6.pth",
    }
    for name, filename in expected.items():
        assert named.named_entry(name).filename == filename, name


def test_gpu_recipes_name_weights_that_fit_their_backbone():
    """Cityscapes / ADE20K / VOC recipes start from mmseg's ImageNet weights, as mmseg's configs."""
    gpu = [n for n in list_configs() if n.split("/")[0] in ("cityscapes", "ade20k", "voc12aug")]
    assert len(gpu) >= 3 * 20
    for name in gpu:
        cfg = load_config(name)
        assert cfg.model.pretrained == "open-mmlab://resnet50_v1c", name
        assert named.named_entry(cfg.model.pretrained).backbone == cfg.model.backbone, name
