"""``segattn compare PLAN --reuse DIR``: copy finished runs of an identical config from other plans' outputs.

The shipped plans share entries (``fcn`` in all of them; ``nonlocal`` in ``survey-table`` is
``embedded-gaussian`` in ``pairwise-functions``; ...). A pending (entry, seed) of this plan is not
trained when a folder ``DIR/runs/<name>/seed<k>/`` of one of the ``--reuse`` outputs holds a
*finished* run (``result.json`` and ``final.pt``) whose stored ``compare_config.json`` trains the same
thing: the two configs, each read through the config schema (so an explicit default equals an
omitted one), are equal in every section except the run's name and the ``train`` keys that only
place or log the run (:data:`IGNORED_TRAIN_KEYS`: paths, thread count, logging, checkpoint
interval), and ``_entry.reasoner`` is equal too. The seed (``train.seed``) must match. The first
match counts (``--reuse`` folders in the order given, entries by name).

The match is copied under the run folder's lock: into a temporary folder beside the run, with the
entry name and paths rewritten (``compare_config.json``, ``result.json``, ``final.pt``,
``analysis.json``, ``train/*.json``), then renamed into place with ``result.json`` last, so the run
counts as finished only once everything is there; a finished run is never replaced. ``result.json``
keeps the original training record (``train``: wall time, threads, device; ``provenance``: commit)
and gains ``reused_from``: the source folder, plan, entry and commit, when and by which commit it
was copied. Training checkpoints (``train/*.pt``) are not copied.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from segattn.compare.plan import Entry, Plan, PlanError
from segattn.compare.rundir import ANALYSIS, FINAL_WEIGHTS, RESULT, RUN_CONFIG, claim_run, source_commit
from segattn.io import atomic_write_json

# train keys that place, log or pace the run, but do not change what it learns (the resume check
# of `segattn compare` ignores the whole train section; here the seed and the numerics keys count)
IGNORED_TRAIN_KEYS = ("work_dir", "threads", "progress", "tensorboard", "resume", "log_interval",
                      "ckpt_interval", "overwrite", "allow_config_change")
Prepared = Sequence[Tuple[int, Entry, Path, Dict[str, Any]]]


def check_reuse_dirs(dirs: Sequence[Union[str, Path]], out: Union[str, Path]) -> List[Path]:
    """The ``--reuse`` folders, checked before anything runs (duplicates dropped): each must be an
    existing ``segattn compare`` output (a ``runs/`` folder inside) other than ``out``."""
    checked: List[Path] = []
    for d in dirs:
        p = Path(d)
        if not p.exists():
            raise PlanError(f"--reuse {p}: no such folder (expected the --out folder of an earlier `segattn compare`)")
        if not p.is_dir():
            raise PlanError(f"--reuse {p} is a file, expected the --out folder of an earlier `segattn compare`")
        if not (p / "runs").is_dir():
            raise PlanError(f"--reuse {p} is not a `segattn compare` output: it has no runs/ folder")
        if p.resolve() == Path(out).resolve():
            raise PlanError(f"--reuse {p} is the --out folder itself (its finished runs are kept anyway); "
                            "name another plan's output")
        if all(p.resolve() != c.resolve() for c in checked):
            checked.append(p)
    return checked


def run_key(data: Dict[str, Any]) -> Optional[str]:
    """What must be equal for two runs to be one (canonical JSON), or None for a config that no
    longer reads (such a run is never reused)."""
    from segattn.engine.config import config_from_dict

    try:
        cfg = config_from_dict({k: v for k, v in data.items() if not k.startswith("_")}).to_dict()
    except (TypeError, ValueError, KeyError):
        return None
    cfg.pop("name", None)
    cfg["train"] = {k: v for k, v in cfg["train"].items() if k not in IGNORED_TRAIN_KEYS}
    cfg["_reasoner"] = (data.get("_entry") or {}).get("reasoner")
    return json.dumps(cfg, sort_keys=True, default=str)


class ReuseIndex:
    """The finished runs of the ``--reuse`` folders by :func:`run_key` (read on first use)."""

    def __init__(self, dirs: Sequence[Path]) -> None:
        self.dirs = list(dirs)
        self._index: Optional[Dict[str, Path]] = None

    def _build(self) -> Dict[str, Path]:
        index: Dict[str, Path] = {}
        for d in self.dirs:
            for rdir in sorted(d.glob("runs/*/seed*")):
                if not ((rdir / RESULT).is_file() and (rdir / FINAL_WEIGHTS).is_file()):
                    continue
                try:
                    key = run_key(json.loads((rdir / RUN_CONFIG).read_text()))
                except (OSError, ValueError, AttributeError):
                    continue
                if key is not None:
                    index.setdefault(key, rdir)  # the first match counts
        return index

    def find(self, data: Dict[str, Any]) -> Optional[Path]:
        """The finished run that trained ``data`` already, or None."""
        if self._index is None:
            self._index = self._build()
        key = run_key(data)
        return None if key is None else self._index.get(key)


def _rebase(obj: Any, old: str, new: str) -> Any:
    """``obj`` with every string path under the folder ``old`` moved to ``new``."""
    if isinstance(obj, dict):
        return {k: _rebase(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rebase(v, old, new) for v in obj]
    if isinstance(obj, str) and (obj == old or obj.startswith(old + os.sep)):
        return new + obj[len(old):]
    return obj


def _run_config(src_data: Dict[str, Any], data: Dict[str, Any], old: str, new: str) -> Dict[str, Any]:
    """The copy's ``compare_config.json``: this plan's config (equal to the source's by the key, and
    what the next call's resume check compares against) with the source's ``train`` section (the
    thread count it really ran with), its paths moved into the new folder."""
    out = json.loads(json.dumps(data))
    out["train"] = _rebase(dict(src_data.get("train") or {}), old, new)
    out["train"]["work_dir"] = data["train"]["work_dir"]
    return out


def copy_run(src: Path, rdir: Path, data: Dict[str, Any], plan: Plan, dataset: str, entry: Entry) -> Dict[str, Any]:
    """Copy the finished run ``src`` into ``rdir`` (whose lock the caller holds, and which holds no
    ``result.json``) as this plan's ``entry``; returns the new ``result.json`` data."""
    from segattn.engine.checkpoint import atomic_save, load_checkpoint

    if (rdir / RESULT).is_file():
        raise PlanError(f"{rdir} holds a finished run already; it is not replaced")
    src_data = json.loads((src / RUN_CONFIG).read_text())
    old = str(Path((src_data.get("train") or {}).get("work_dir") or src / "train").parent)
    new = str(rdir)
    config = _run_config(src_data, data, old, new)
    cfg_data = {k: v for k, v in config.items() if not k.startswith("_")}
    src_result = json.loads((src / RESULT).read_text())
    result = {**src_result, "plan": plan.name, "dataset": dataset, "entry": entry.name, "describe": entry.describe(),
              "config": cfg_data}
    result["reused_from"] = {
        "run": str(src), "plan": src_result.get("plan"), "entry": src_result.get("entry"),
        "commit": (src_result.get("provenance") or {}).get("commit"),
        "copied_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "copied_by_commit": source_commit(),
    }
    if "reused_from" in src_result:  # a copy of a copy: keep the chain
        result["reused_from"]["source_reused_from"] = src_result["reused_from"]

    tmp = rdir.parent / f".{rdir.name}.reuse-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for path in sorted(src.rglob("*")):  # everything but hidden files (locks) and training checkpoints
            rel = path.relative_to(src)
            if any(part.startswith(".") for part in rel.parts) or not path.is_file():
                continue
            if rel.parts[0] == "train" and path.suffix == ".pt":
                continue
            if rel in (Path(RESULT), Path(RUN_CONFIG), Path(FINAL_WEIGHTS)):
                continue
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".json":
                try:
                    obj = _rebase(json.loads(path.read_text()), old, new)
                except ValueError:
                    shutil.copyfile(path, dest)
                    continue
                if rel == Path(ANALYSIS) and isinstance(obj, dict):
                    obj.update({"entry": entry.name, "checkpoint": str(rdir / FINAL_WEIGHTS)})
                elif rel == Path("train", "config.json") and isinstance(obj, dict):
                    obj["name"] = config.get("name", obj.get("name"))
                atomic_write_json(dest, obj)
            else:
                shutil.copyfile(path, dest)
        if (src / FINAL_WEIGHTS).is_file():  # an archived twin (same_as) may have none
            weights = load_checkpoint(str(src / FINAL_WEIGHTS))
            weights["config"] = cfg_data
            weights["entry"] = {"name": entry.name, "reasoner": entry.reasoner}
            atomic_save(weights, str(tmp / FINAL_WEIGHTS))
        atomic_write_json(tmp / RUN_CONFIG, config)
        atomic_write_json(tmp / RESULT, result)
        # into place: the unfinished attempt's leftovers go first, result.json comes last
        for path in rdir.iterdir():
            if not path.name.startswith("."):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        for path in sorted(tmp.iterdir(), key=lambda p: p.name == RESULT):
            os.replace(path, rdir / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _copy_if_pending(src: Path, rdir: Path, data: Dict[str, Any], plan: Plan, dataset: str, entry: Entry) -> bool:
    """:func:`copy_run` under the run folder's lock; False when another live process holds the lock (it
    trains the run, and the training pass says so) or the run finished meanwhile."""
    claim = claim_run(rdir)
    if claim is None:
        return False
    try:
        if (rdir / RESULT).is_file():
            return False
        copy_run(src, rdir, data, plan, dataset, entry)
    finally:
        claim.release()
    return True


def reuse_pending(prepared: Prepared, dirs: Sequence[Path], plan: Plan, dataset: str,
                  log: Callable[[str], None]) -> int:
    """Copy every pending run of ``prepared`` that a ``--reuse`` folder has finished already (in this
    process, before any training or dispatch); returns how many were copied. A run another process
    holds the lock of is left alone."""
    if not dirs:
        return 0
    index = ReuseIndex(dirs)
    reused = 0
    total = len(prepared)
    for i, (seed, entry, rdir, data) in enumerate(prepared, 1):
        if (rdir / RESULT).is_file():
            continue
        src = index.find(data)
        if src is None:
            continue
        if _copy_if_pending(src, rdir, data, plan, dataset, entry):
            reused += 1
            log(f"[{i}/{total}] {entry.name} seed {seed}: reused from {src}")
    return reused


def copy_same_network(prepared: Prepared, out: Path, plan: Plan, dataset: str, log: Callable[[str], None]) -> int:
    """Copy into every pending run of an entry with ``same_as`` the finished run of that entry at the
    same seed (this plan's ``--out``; :func:`copy_run`, so ``reused_from`` names it; with its weights
    when the twin has them: an archived twin has none, and ``--analyze`` leaves such entries out);
    returns how many were copied. A run whose twin is not finished yet waits for a later call."""
    copied = 0
    for seed, entry, rdir, data in prepared:
        if entry.same_as is None or (rdir / RESULT).is_file():
            continue
        twin = Path(out) / "runs" / entry.same_as / f"seed{seed}"
        if not (twin / RESULT).is_file():
            continue  # copied once the twin's run is finished (after the runs of this call, or a later call)
        if _copy_if_pending(twin, rdir, data, plan, dataset, entry):
            copied += 1
            log(f"{entry.name} seed {seed}: same network as {entry.same_as}; its run copied")
    return copied
