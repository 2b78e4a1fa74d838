"""Write src/segattn/convert/mmseg_zoo.json: mmseg's published checkpoints of the heads segattn converts.

Run in the mmseg 1.2.2 venv (see scripts/make_mmseg_fixtures.py) with this checkout's source on the path;
the manifest is a generated file: regenerate it (never edit it by hand) after a converter change::

    PYTHONPATH=src /tmp/mmseg122/bin/python scripts/make_mmseg_zoo.py

For every model of the covered methods' ``metafile.yaml`` (shipped in the mmseg 1.2.2 wheel) it reads
the config name, dataset, published single-scale and ms+flip mIoU and the weights URL (whose
``-xxxxxxxx.pth`` suffix is the first 8 hex digits of the file's sha256), merges the config with
mmengine, keeps the parts the converter reads (model without losses / init, dataset type, crop) and
checks that :func:`segattn.convert.mmseg.architecture_from_config` accepts it. Entries it does not
accept are listed with the reason and left out. Five typos of the 1.2.2 metafiles are corrected
(``_fix``): the name / config ``eemanet_r50-...``, the host ``download.oz1z1penmmlab.com``, the
dataset ``'# ResNet backbone'`` of OCRNet's R101 rows (Cityscapes, as their names say), the
OCRNet HRNet-W18 / W18-Small ADE20K 160k rows named (and configured) as their 80k twins and the
PSPNet R-50-D32 (ResNetV1c) row named (and configured) as its plain-ResNet "r50b" twin.
"""

from __future__ import annotations

import json
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from make_mmseg_fixtures import _placeholder_ext  # noqa: E402

METHODS = ["fcn", "pspnet", "deeplabv3", "nonlocal_net", "danet", "ccnet", "isanet", "ann", "apcnet", "emanet",
           "psanet", "encnet", "dmnet", "gcnet", "dnlnet", "ocrnet",
           "hrnet"]  # configs/hrnet: the FCN-HRNet models (FCNHead on HRNet)
OUT = os.path.join(ROOT, "src", "segattn", "convert", "mmseg_zoo.json")
_DROP = {"loss_decode", "norm_cfg", "init_cfg", "act_cfg", "conv_cfg", "sampler", "norm_eval", "train_cfg"}


def _fix(m: dict) -> dict:
    m = dict(m)
    m["Name"] = m["Name"].replace("eemanet_", "emanet_")
    m["Config"] = m["Config"].replace("eemanet_", "emanet_")
    m["Weights"] = (m.get("Weights") or "").replace("download.oz1z1penmmlab.com", "download.openmmlab.com")
    # OCRNet HRNet-W18(-Small) ADE20K 160k rows are named and configured as their 80k twins (the URL says 160k)
    url_k = re.search(r"_(\d+)k_", m["Weights"].rsplit("/", 1)[-1])
    name_k = re.search(r"-(\d+)k_", m["Name"])
    if url_k and name_k and url_k.group(1) != name_k.group(1):
        for key in ("Name", "Config"):
            m[key] = m[key].replace(f"-{name_k.group(1)}k_", f"-{url_k.group(1)}k_")
        print(f"  renamed {m['Name']} (its weights URL says {url_k.group(1)}k)")
    # the first PSPNet R-50-D32 row is named (and configured) as the plain-ResNet "r50b" one that follows it;
    # its weights are the ResNetV1c model's (pspnet_r50-d32_512x1024, mIoU 73.88), so it is that config's
    if "pspnet_r50b-d32_" in m["Name"] and "/pspnet_r50-d32_512x1024_80k_cityscapes_" in m["Weights"]:
        for key in ("Name", "Config"):
            m[key] = m[key].replace("pspnet_r50b-d32_", "pspnet_r50-d32_")
        print(f"  renamed {m['Name']} (its weights are the ResNetV1c model's)")
    results = dict(m.get("Results") or {})
    if str(results.get("Dataset", "")).startswith("#") and "_cityscapes-" in m["Name"]:  # OCRNet R101 rows
        results["Dataset"] = "Cityscapes"  # the metafile has '# ResNet backbone' (a README heading) there
        m["Results"] = results
    return m


def _backbone_label(bb: dict, kwargs: dict) -> str:
    """``R-50-D8``, ``R-18b-D8`` (plain ResNet), ``R-101-D16-MG124``, ``HRNetV2p-W18-Small`` / ``-W48``: the
    zoo's naming."""
    if bb.get("type") == "HRNet":
        extra = bb["extra"]
        small = "-Small" if extra["stage1"]["num_blocks"][0] == 2 else ""
        return f"HRNetV2p-W{extra['stage4']['num_channels'][0]}{small}"
    if bb.get("type") not in ("ResNet", "ResNetV1c"):
        return str(bb.get("type"))
    plain = "b" if bb.get("type") == "ResNet" else ""
    grid = "-MG" + "".join(str(g) for g in bb["multi_grid"]) if bb.get("multi_grid") else ""
    return f"R-{bb['depth']}{plain}-D{kwargs['output_stride']}{grid}"


def _trim(node):
    if isinstance(node, dict):
        return {k: _trim(v) for k, v in node.items() if k not in _DROP}
    if isinstance(node, (list, tuple)):
        return [_trim(v) for v in node]
    return node


def main() -> None:
    _placeholder_ext()
    import mmseg
    from mmengine.config import Config

    from segattn.convert.mmconfig import parse_config
    from segattn.convert.mmseg import architecture_from_config
    from segattn.convert.mmseg_read import CONFIG_KEYS

    configs = os.path.join(os.path.dirname(mmseg.__file__), ".mim")
    entries, skipped = [], []
    for method in METHODS:
        with open(os.path.join(configs, "configs", method, "metafile.yaml")) as f:
            meta = yaml.safe_load(f)
        for m in map(_fix, meta["Models"]):
            cfg_path = os.path.join(configs, m["Config"])
            if not os.path.isfile(cfg_path):
                skipped.append((m["Name"], "config file not shipped"))
                continue
            cfg = Config.fromfile(cfg_path)
            parsed = parse_config(cfg.pretty_text, source=m["Config"], keys=CONFIG_KEYS)
            try:
                arch = architecture_from_config(parsed)
            except Exception as exc:  # noqa: BLE001 - reported and skipped
                skipped.append((m["Name"], str(exc)[:120]))
                continue
            url = m.get("Weights") or ""
            digest = re.search(r"-([0-9a-f]{8})\.pth$", url)
            model = _trim({k: parsed["model"][k] for k in ("type", "backbone", "decode_head", "auxiliary_head",
                                                            "test_cfg", "data_preprocessor") if k in parsed["model"]})
            metrics = (m.get("Results") or {}).get("Metrics") or {}
            entries.append({
                "name": m["Name"],
                "method": method,
                "model": arch.name,
                "backbone": _backbone_label(parsed["model"]["backbone"], arch.kwargs),
                "dataset": (m.get("Results") or {}).get("Dataset"),
                "crop_size": list(parsed.get("crop_size") or []),
                "iterations": int(re.search(r"(\d+)k", m["Name"]).group(1)) * 1000,
                "miou": metrics.get("mIoU"),
                "miou_ms_flip": metrics.get("mIoU(ms+flip)"),
                "url": url,
                "sha256_prefix": digest.group(1) if digest else None,
                "config": {"model": model, "dataset_type": parsed.get("dataset_type"),
                           "crop_size": parsed.get("crop_size")},
            })
    record = {"source": f"mmsegmentation {mmseg.__version__} metafiles (configs/<method>/metafile.yaml)",
              "generated_by": "scripts/make_mmseg_zoo.py", "entries": entries,
              "not_converted": [{"name": n, "why": w} for n, w in skipped]}
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:  # one entry per line: small and easy to diff
        head = {k: v for k, v in record.items() if k != "entries"}
        f.write("{\n" + "".join(f" {json.dumps(k)}: {json.dumps(v)},\n" for k, v in head.items()) + ' "entries": [\n')
        f.write(",\n".join("  " + json.dumps(e, separators=(",", ":")) for e in entries) + "\n ]\n}\n")
    os.replace(tmp, OUT)
    print(f"{len(entries)} entries, {len(skipped)} not converted -> {OUT}")
    for n, w in skipped:
        print(f"  skipped {n}: {w}")


if __name__ == "__main__":
    main()
