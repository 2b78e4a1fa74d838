"""Run a plan: every (entry, seed) is one ``segattn.engine.train.train`` run in its own folder.

Layout under the output folder ``OUT``::

    OUT/runs/<entry>/seed<k>/compare_config.json   the run's full training config (written first)
    OUT/runs/<entry>/seed<k>/train/                the engine's work dir (metrics.jsonl; last.pt while unfinished)
    OUT/runs/<entry>/seed<k>/final.pt              the trained weights (no optimiser state), for ``segattn analyze``
    OUT/runs/<entry>/seed<k>/result.json           written last, atomically: the run is finished

Resume: a run with ``result.json`` is skipped; one with ``train/last.pt`` continues from it
(``train.resume=auto``) after checking that its stored config equals the one the plan gives now;
one without either starts fresh. Runs go seed-major (seed 0 of every entry, then seed 1, ...), so
an interrupted plan already has every entry at some seeds. SIGINT/SIGTERM stop the current run at
the next step with a checkpoint; run the same command again to continue.

Seeds change the initialisation (``seed_everything(seed)`` before the model is built) and the data
order (``train.seed``); the dataset itself (for the synthetic set, its own ``seed`` keyword) does not
change. After training, in the same process: per-image intersection / ground-truth / prediction
counts on the validation set (for the metrics and the bootstrap), parameters, MACs (whole model:
``FlopCounterMode``; context modules: their analytic ``flops(H, W)`` at the size they see), forward
latency (batch 1, eval size, median of 5) and the peak memory of one training step.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from segattn.compare.cost import measure_cost
from segattn.compare.launch import AfterRun, check_launcher, dispatch
from segattn.compare.plan import (
    Entry,
    Plan,
    PlanError,
    ablate_reasoners,
    entry_config_dict,
    load_plan,
    validate_plan,
)
from segattn.compare.reuse import check_reuse_dirs, copy_same_network, reuse_pending
from segattn.compare.rundir import FINAL_WEIGHTS, RESULT, RUN_CONFIG, claim_run, run_dir, source_commit
from segattn.engine import build
from segattn.engine.config import config_from_dict
from segattn.engine.short import shorten_seeds
from segattn.io import atomic_write_json

Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------- model
def build_entry_model(cfg: Any, entry: Entry, num_classes: int, seed: int) -> nn.Module:
    """The entry's model, initialised from ``seed`` (and its reasoners ablated if asked)."""
    from segattn.engine.train import seed_everything

    seed_everything(seed)
    model = build.build_model(cfg.model, num_classes)
    if entry.reasoner == "identity":
        ablate_reasoners(model)
    return model


def _tensors(obj: Any) -> List[torch.Tensor]:
    """The tensors of a model output (a tensor, or a tuple / list / dict of them), in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for k in sorted(obj) for t in _tensors(obj[k])]
    if isinstance(obj, (tuple, list)):
        return [t for v in obj for t in _tensors(v)]
    return []


_PLAIN = (bool, int, float, str, tuple, list, dict, type(None))


def _settings(model: nn.Module) -> Dict[str, Any]:
    """Every submodule's plain attributes (``aux_weight``, ``loss_weights``, modes, sizes), which can
    change training without showing in the module tree or the outputs; not the model's own record of
    the call that built it (``config``: its model name differs by definition)."""
    return {f"{path}.{k}" if path else k: v for path, mod in model.named_modules() for k, v in vars(mod).items()
            if not k.startswith("_") and isinstance(v, _PLAIN) and (path, k) != ("", "config")}


def _perturbed(name: str, value: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One state entry plus N(0, 0.02^2) noise (a BN running variance: plus its absolute value), so that no
    weight is zero and the activations keep their scale; integer entries (batch counters) kept."""
    if not value.is_floating_point():
        return value
    r = 0.02 * torch.randn(value.shape, generator=g)
    return value + (r.abs() if name.endswith("running_var") else r).to(value.dtype)


def _same_network_problem(plan: Plan, dataset: str, entry: Entry, twin: Entry, extra: Sequence[str]) -> Optional[str]:
    """What differs between the runs of ``entry`` and ``twin`` (None: nothing): the config outside the
    model section, the module tree (``repr``), the modules' plain settings (:func:`_settings`), the
    initial state at a seed, or the outputs once the same small noise is added to every parameter and
    buffer (so a zero-initialised branch cannot hide a difference)."""
    data = [entry_config_dict(plan, dataset, e, 0, "/same_as", extra) for e in (entry, twin)]
    rest = [{k: v for k, v in d.items() if k not in ("model", "name")} for d in data]
    if rest[0] != rest[1]:
        keys = sorted(k for k in set(rest[0]) | set(rest[1]) if rest[0].get(k) != rest[1].get(k))
        return f"their configs differ outside the model ({', '.join(keys)})"
    cfgs = [config_from_dict({k: v for k, v in d.items() if not k.startswith("_")}) for d in data]
    models = [build_entry_model(c, e, 5, 0).eval() for c, e in zip(cfgs, (entry, twin))]
    if repr(models[0]) != repr(models[1]):
        return "their module trees differ"
    settings = [_settings(m) for m in models]
    if settings[0] != settings[1]:
        keys = sorted(k for k in set(settings[0]) | set(settings[1]) if settings[0].get(k) != settings[1].get(k))
        return f"their modules' settings differ ({', '.join(keys[:4])})"
    states = [m.state_dict() for m in models]
    if [(k, v.shape) for k, v in states[0].items()] != [(k, v.shape) for k, v in states[1].items()]:
        return "their parameters differ in name or shape"
    if any(not torch.equal(states[0][k], states[1][k]) for k in states[0]):
        return "their initial weights at a seed differ"
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    outs = []
    for m, state in zip(models, states):
        g = torch.Generator().manual_seed(0)
        m.load_state_dict({k: _perturbed(k, v, g) for k, v in state.items()})
        with torch.no_grad():
            outs.append(_tensors(m(x)))
    if not all(torch.isfinite(t).all() for t in outs[0] + outs[1]):
        return "their outputs are not finite with perturbed weights, so they cannot be compared"
    if len(outs[0]) != len(outs[1]) or any(not torch.equal(a, b) for a, b in zip(*outs)):
        return "their outputs differ with the same perturbed weights"
    return None


def check_same_as(plan: Plan, dataset: str, extra: Sequence[str] = ()) -> None:
    """Before any run: every entry with ``same_as`` trains the very same thing as its twin (see
    :func:`_same_network_problem`), so copying the twin's runs is exact; ``PlanError`` otherwise."""
    for entry in plan.entries:
        if entry.same_as is None:
            continue
        problem = _same_network_problem(plan, dataset, entry, plan.entry(entry.same_as), extra)
        if problem is not None:
            raise PlanError(f"plan {plan.name!r}, entry {entry.name!r}: same_as {entry.same_as!r}, but {problem} "
                            f"on protocol {dataset!r}; remove same_as to train it")


# ---------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def per_image_counts(model: nn.Module, val_set: Any, cfg: Any, num_classes: int, ignore_index: int,
                     device: torch.device) -> Dict[str, np.ndarray]:
    """Per validation image and class: true positives, ground-truth and predicted pixel counts."""
    from torch.utils.data import DataLoader

    from segattn.engine.evaluate import infer

    e = cfg.eval
    model.eval()
    loader = DataLoader(val_set, batch_size=cfg.data.val_batch_size, shuffle=False, num_workers=cfg.data.num_workers)
    rows: Dict[str, List[np.ndarray]] = {"tp": [], "gt": [], "pred": []}
    k = num_classes
    seen = 0
    for images, masks in loader:
        if e.max_samples is not None and seen >= e.max_samples:
            break
        scores = infer(model, images.to(device), k, e.mode, e.crop_size, e.stride, e.scales, e.flip)
        if scores.shape[-2:] != masks.shape[-2:]:
            scores = torch.nn.functional.interpolate(scores.float(), size=masks.shape[-2:], mode="bilinear",
                                                     align_corners=False)
        preds = scores.argmax(1).cpu()
        for p, t in zip(preds, masks):
            keep = (t != ignore_index) & (t >= 0) & (t < k)
            p, t = p[keep].long(), t[keep].long()
            rows["tp"].append(torch.bincount(t[p == t], minlength=k).numpy())
            rows["gt"].append(torch.bincount(t, minlength=k).numpy())
            rows["pred"].append(torch.bincount(p.clamp(0, k - 1), minlength=k).numpy())
            seen += 1
    return {key: np.stack(v).astype(np.int64) for key, v in rows.items()}


def metrics_from_counts(counts: Dict[str, np.ndarray], classes: Sequence[str]) -> Dict[str, Any]:
    """Dataset-level metrics from per-image counts summed over images (the engine's definitions and
    NaN policy, :mod:`segattn.engine.metrics`): ``IoU_c = tp / (gt + pred - tp)`` (NaN for an empty
    union, left out of mIoU), ``Acc_c = tp / gt`` (NaN without ground truth), ``aAcc = sum tp / sum gt``."""
    tp, gt, pr = (counts[k].sum(0).astype(np.float64) for k in ("tp", "gt", "pred"))
    union = gt + pr - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
        acc = np.where(gt > 0, tp / np.maximum(gt, 1), np.nan)

    def nanmean(v: np.ndarray) -> float:
        return float(np.nanmean(v)) if np.any(~np.isnan(v)) else math.nan

    total = float(gt.sum())
    return {"mIoU": nanmean(iou), "aAcc": float(tp.sum()) / total if total > 0 else math.nan, "mAcc": nanmean(acc),
            "IoU": {str(n): float(v) for n, v in zip(classes, iou)},
            "Acc": {str(n): float(v) for n, v in zip(classes, acc)}, "pixels": int(total)}




# ------------------------------------------------------------------------------------------ runs
def _diff_keys(a: Any, b: Any, prefix: str = "") -> List[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: List[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: stored {a!r}, now {b!r}"]


def prepare_run(out: Path, plan: Plan, dataset: str, entry: Entry, seed: int, threads: Optional[int],
                extra: Sequence[str]) -> Tuple[Path, Dict[str, Any]]:
    """The run's folder and config data; refuses to resume a run whose stored config differs."""
    rdir = run_dir(out, entry.name, seed)
    data = entry_config_dict(plan, dataset, entry, seed, str(rdir / "train"), extra)
    tr = data.setdefault("train", {})
    tr.update({"progress": False, "tensorboard": False, "resume": None})
    if threads:
        tr["threads"] = int(threads)
    data["_entry"] = {"name": entry.name, "reasoner": entry.reasoner}
    stored = rdir / RUN_CONFIG
    if stored.is_file():
        old = json.loads(stored.read_text())
        ignore = ("train",)  # threads / paths may differ between machines; the rest must match
        diffs = [d for d in _diff_keys({k: v for k, v in old.items() if k not in ignore},
                                       {k: v for k, v in data.items() if k not in ignore})]
        if diffs:
            raise PlanError(f"{rdir} was started with another config ({'; '.join(diffs[:4])}); "
                            "use another --out folder or delete that run")
    return rdir, data


def save_final_weights(rdir: Path, model: nn.Module, cfg_data: Dict[str, Any], meta: Dict[str, Any],
                       entry: Entry) -> Path:
    """Write the trained model's state (``OUT/runs/<entry>/seed<k>/final.pt``, atomically) for ``segattn analyze``.

    Holds ``model`` (weights and buffers: EMA bases, BatchNorm statistics), ``config``, ``meta`` and
    ``entry`` (name, ``reasoner``), no optimiser state: about 0.8 MB per synthetic-protocol run
    (0.20 M parameters) and 49 MiB per CamVid-protocol run (12.85 M). ``segattn eval --checkpoint``
    reads it as a training checkpoint.
    """
    from segattn.engine.checkpoint import atomic_save

    path = rdir / FINAL_WEIGHTS
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save({"model": state, "config": cfg_data, "meta": meta,
                 "entry": {"name": entry.name, "reasoner": entry.reasoner}}, str(path))
    return path


def train_run(rdir: Path, data: Dict[str, Any], entry: Entry, seed: int, dataset: str, plan: Plan,
              callbacks: Sequence[Any] = (), log: Log = _print, keep_checkpoints: bool = False,
              after_run: Optional[AfterRun] = None) -> Optional[Dict[str, Any]]:
    """Train (or resume) one run and measure it; returns the result, or None when interrupted.

    The final weights go to ``final.pt`` (:func:`save_final_weights`) just before ``result.json``;
    then the run's training checkpoints are deleted unless ``keep_checkpoints`` (``metrics.jsonl``
    and ``config.json`` stay), and ``after_run(rdir)`` is called, still under the caller's lock of
    the run folder (``segattn compare --analyze``: the run's analysis, stored beside it)."""
    from segattn.engine.train import dataset_meta, train

    rdir.mkdir(parents=True, exist_ok=True)
    if not (rdir / RUN_CONFIG).is_file():
        atomic_write_json(rdir / RUN_CONFIG, data)
    work = rdir / "train"
    resumable = (work / "last.pt").is_file()
    if work.exists() and not resumable:
        shutil.rmtree(work)  # an attempt that died before its first checkpoint: nothing to resume
    cfg_data = {k: v for k, v in data.items() if not k.startswith("_")}
    if resumable:
        cfg_data["train"]["resume"] = "auto"
    cfg = config_from_dict(cfg_data)
    train_set, val_set = build.build_datasets(cfg)
    if val_set is None:
        raise PlanError(f"protocol {dataset!r} has no validation split (data.val_split); a comparison needs one")
    meta = dataset_meta(train_set)
    model = build_entry_model(cfg, entry, meta["num_classes"], seed)
    timer = rdir / "train_time.json"  # training seconds of earlier sessions of this run (resumes add up)
    before = float(json.loads(timer.read_text())["seconds"]) if timer.is_file() else 0.0
    t0 = time.time()
    # the engine builds its own datasets (class weights from the raw training masks, as `segattn train`)
    # and evaluates at the end: its mIoU is stored next to ours as a cross-check of the per-image counts
    summary = train(cfg, model=model, callbacks=callbacks)
    train_wall = before + time.time() - t0
    atomic_write_json(timer, {"seconds": round(train_wall, 2)})
    if summary.get("interrupted"):
        return None
    device = next(model.parameters()).device
    counts = per_image_counts(model, val_set, cfg, meta["num_classes"], meta["ignore_index"], device)
    metrics = metrics_from_counts(counts, meta["classes"])
    cost = measure_cost(model, train_set, val_set, cfg, device, rdir / RUN_CONFIG)
    result = {
        "plan": plan.name, "dataset": dataset, "entry": entry.name, "describe": entry.describe(), "seed": seed,
        "metrics": metrics, "engine_mIoU": (summary.get("metrics") or {}).get("mIoU"), "per_image": {k: v.tolist() for k, v in counts.items()}, "classes": meta["classes"],
        "cost": cost,
        "train": {"iterations": summary.get("iteration"), "wall_s": round(train_wall, 2),
                  "it_per_s": summary.get("it_per_s"), "resumed": resumable, "threads": torch.get_num_threads(),
                  "device": str(device)},
        "provenance": {"commit": source_commit(), "torch": torch.__version__, "python": sys.version.split()[0]},
        "config": cfg_data,
    }
    from segattn.engine.metrics import json_safe

    save_final_weights(rdir, model, cfg_data, meta, entry)  # before result.json: a finished run has its weights
    atomic_write_json(rdir / RESULT, json_safe(result))
    if not keep_checkpoints:  # the run is finished and measured; its optimiser state is not needed
        for name in ("last.pt", "best.pt"):
            (work / name).unlink(missing_ok=True)
    if after_run is not None:
        after_run(rdir)
    return result


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def seed_range(n_seeds: int, replicate: bool = False, first_seed: int = 0) -> List[int]:
    """The seeds a plan runs: ``s .. s+n-1`` (``s = first_seed``), and with ``replicate`` also the
    disjoint ``s+n .. s+2n-1``."""
    return list(range(first_seed, first_seed + (2 * n_seeds if replicate else n_seeds)))


def run_plan(plan: Union[str, Plan], dataset: str = "synthetic", seeds: Optional[int] = None,
             out: Optional[Union[str, Path]] = None, extra: Sequence[str] = (), threads: Optional[int] = 1,
             report: bool = True, report_dir: Optional[Union[str, Path]] = None, callbacks: Sequence[Any] = (),
             log: Log = _print, keep_checkpoints: bool = False, replicate: bool = False, workers: int = 1,
             launcher: str = "local", launcher_options: Optional[Dict[str, Any]] = None,
             reuse: Sequence[Union[str, Path]] = (), first_seed: int = 0,
             after_run: Optional[AfterRun] = None) -> Dict[str, Any]:
    """Run every missing (entry, seed) of ``plan`` on ``dataset`` and write the report. ``after_run``:
    called with each run folder the call trains, once the run is finished (see :func:`train_run`); a
    module-level function with ``-j`` or SLURM (it is pickled into the workers).

    Returns ``{"out", "done", "trained", "reused", "skipped", "busy", "interrupted", "total", "report"}``;
    ``interrupted`` is True when a stop signal ended a run (its checkpoint is kept; call again to resume).
    ``extra`` are further ``key=value`` config overrides applied to every run (after the protocol's);
    a short run is ``extra=["schedule.iters=2"]`` (and ``seeds=1``). Finished runs keep their metrics
    and config but not their checkpoints unless ``keep_checkpoints``. ``replicate`` also trains the
    disjoint seeds ``n .. 2n-1`` and reports whether each verdict replicates. ``workers`` > 1 trains
    that many runs at a time in local worker processes; ``launcher="slurm"`` submits every run through
    submitit (``launcher_options``: ``partition``, ``time_min``, ``cpus``, ``gpus``; see
    :mod:`segattn.compare.launch`). Every path takes the run folder's lock, so any mix of them can
    share one ``out``. ``reuse`` names other ``segattn compare`` outputs: a pending run whose identical
    config one of them has finished is copied from there, with provenance, instead of trained
    (:mod:`segattn.compare.reuse`). ``first_seed`` moves the seed range (a pilot on seeds that the
    published range ``0 .. 2n-1`` never uses: ``first_seed=100``).
    """
    plan = load_plan(plan) if isinstance(plan, str) else plan
    n_seeds = plan.seeds if seeds is None else int(seeds)
    if n_seeds < 1:
        raise PlanError(f"--seeds must be >= 1, got {n_seeds}")
    if workers < 1:
        raise PlanError(f"-j/--jobs must be >= 1, got {workers}")
    if isinstance(first_seed, bool) or not isinstance(first_seed, int) or first_seed < 0:
        raise PlanError(f"--first-seed must be an integer >= 0, got {first_seed!r}")
    if callbacks and (workers > 1 or launcher != "local"):
        raise PlanError(f"callbacks run in this process only; they cannot reach runs trained by "
                        f"{'workers' if launcher == 'local' else launcher + ' jobs'}: pass workers=1 with callbacks, "
                        "or no callbacks")
    n_seeds = shorten_seeds(n_seeds)  # SEGATTN_DOCS_SHORT=1 (the docs tests): at most 2 seeds
    out = Path(out) if out is not None else Path("outputs") / "compare" / f"{plan.name}-{dataset}"
    check_launcher(launcher, launcher_options or {})
    validate_plan(plan, dataset, extra)
    check_same_as(plan, dataset, extra)
    reuse_dirs = check_reuse_dirs(reuse, out)
    jobs = [(seed, e) for seed in seed_range(n_seeds, replicate, first_seed) for e in plan.entries]
    prepared = [(seed, e, *prepare_run(out, plan, dataset, e, seed, threads, extra)) for seed, e in jobs]
    from segattn.io import check_writable_dir

    check_writable_dir(out, "--out folder")
    if report_dir is not None:  # written after the runs: checked before them
        check_writable_dir(report_dir, "--report-dir")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "plan.json", {"plan": plan.name, "source": plan.source, "dataset": dataset,
                                          "seeds": n_seeds, "first_seed": first_seed, "replicate": replicate,
                                          "extra": list(extra),
                                          "reuse": [str(d) for d in reuse_dirs],
                                          "entries": [e.describe() for e in plan.entries]})
    total = len(prepared)
    done = sum((rdir / RESULT).is_file() for _, _, rdir, _ in prepared)
    log(f"compare {plan.name} on {dataset}: {total} runs ({len(plan.entries)} entries x {total // len(plan.entries)} "
        f"seeds), {done} already finished, output {out}"
        + (f"; reusing finished runs of {', '.join(map(str, reuse_dirs))}" if reuse_dirs else ""))
    reused = reuse_pending(prepared, reuse_dirs, plan, dataset, log)  # here, so workers only get what must train
    reused += copy_same_network(prepared, out, plan, dataset, log)  # twins finished by earlier calls
    trainable = [p for p in prepared if p[1].same_as is None]  # the others are copies of their twins' runs
    if launcher != "local" or workers > 1:
        todo = [(seed, e.name) for seed, e, rdir, _ in trainable if not (rdir / RESULT).is_file()]
        states = dispatch(plan, dataset, todo, out, threads, extra, keep_checkpoints, workers, launcher,
                          launcher_options or {}, log, run_one, after_run)
        trained = sum(s == "done" for s in states)
        busy = sum(s == "busy" for s in states)
        interrupted = any(s == "interrupted" for s in states)
    else:
        trained, _, busy, _, interrupted = _run_serial(trainable, plan, dataset, callbacks, log, keep_checkpoints,
                                                       done + reused, after_run)
    if not interrupted:
        reused += copy_same_network(prepared, out, plan, dataset, log)
    done = sum((rdir / RESULT).is_file() for _, _, rdir, _ in prepared)
    skipped = done - trained - reused  # finished before this call, or by another process meanwhile
    if busy:
        log(f"{busy} run(s) were being trained by other processes; the report below covers the finished ones "
            "(run the command again, or with --report-only, once they are done)")
    log(f"{plan.name} on {dataset}: {done}/{total} runs finished ({trained} trained, {reused} reused, "
        f"{skipped} finished before{f', {busy} left to other processes' if busy else ''})")
    rep = None
    if report:
        from segattn.compare.report import write_report

        rep = write_report(plan, out, dataset, report_dir=report_dir, seeds=n_seeds, replicate=replicate,
                           first_seed=first_seed)
        log(f"report: {rep['paths']['markdown']}")
    return {"out": str(out), "done": done, "trained": trained, "reused": reused, "skipped": skipped, "busy": busy,
            "interrupted": interrupted, "total": total, "report": rep}


def _run_serial(prepared: List[Tuple[int, Entry, Path, Dict[str, Any]]], plan: Plan, dataset: str,
                callbacks: Sequence[Any], log: Log, keep_checkpoints: bool, done: int,
                after_run: Optional[AfterRun] = None) -> Tuple[int, int, int, int, bool]:
    """The runs one after another in this process; returns (trained, skipped, busy, done, interrupted)."""
    total = len(prepared)
    walls: List[float] = []
    stored_walls = []
    for _, _, rdir, _ in prepared:
        if (rdir / RESULT).is_file():
            try:
                stored_walls.append(float(json.loads((rdir / RESULT).read_text())["train"]["wall_s"]))
            except (ValueError, KeyError, TypeError):
                pass
    trained = skipped = busy = 0
    interrupted = False
    for i, (seed, entry, rdir, data) in enumerate(prepared, 1):
        tag = f"[{i}/{total}] {entry.name} seed {seed}"
        if (rdir / RESULT).is_file():
            skipped += 1
            continue
        claim = claim_run(rdir)
        if claim is None:
            busy += 1
            log(f"{tag}: being trained by another process; left to it")
            continue
        try:
            if (rdir / RESULT).is_file():  # finished by another process since the check above
                skipped += 1
                continue
            state = "resuming" if (rdir / "train" / "last.pt").is_file() else "starting"
            log(f"{tag}: {state}")
            t0 = time.time()
            result = train_run(rdir, data, entry, seed, dataset, plan, callbacks, log, keep_checkpoints, after_run)
        finally:
            claim.release()
        if result is None:
            interrupted = True
            log(f"{tag}: interrupted; checkpoint kept in {rdir / 'train'}; run the same command again to resume")
            break
        trained += 1
        done += 1
        walls.append(time.time() - t0)
        stored_walls.append(float(result["train"]["wall_s"]))  # whole training time, over resumes
        left = (total - done) * statistics.mean(stored_walls)
        log(f"{tag}: mIoU {100 * result['metrics']['mIoU']:.2f} in {_fmt_time(walls[-1])}; "
            f"{done}/{total} done, about {_fmt_time(left)} left")
    return trained, skipped, busy, done, interrupted


def run_one(plan: Plan, dataset: str, entry_name: str, seed: int, out: Union[str, Path], threads: Optional[int],
            extra: Sequence[str], keep_checkpoints: bool = False, after_run: Optional[AfterRun] = None) -> Dict[str, Any]:
    """One (entry, seed) of a plan in this process, under the run folder's lock (the unit of ``-j`` and
    of the SLURM launcher). Returns ``{"entry", "seed", "state", "mIoU"}`` with ``state`` one of
    ``done``, ``skipped`` (already finished), ``busy`` (another live process holds it), ``interrupted``."""
    entry = plan.entry(entry_name)
    rdir, data = prepare_run(Path(out), plan, dataset, entry, seed, threads, extra)
    row: Dict[str, Any] = {"entry": entry_name, "seed": seed, "state": "skipped", "mIoU": math.nan}
    if (rdir / RESULT).is_file():
        return row
    claim = claim_run(rdir)
    if claim is None:
        return {**row, "state": "busy"}
    try:
        if (rdir / RESULT).is_file():
            return row
        result = train_run(rdir, data, entry, seed, dataset, plan, (), _print, keep_checkpoints, after_run)
    finally:
        claim.release()
    if result is None:
        return {**row, "state": "interrupted"}
    return {**row, "state": "done", "mIoU": 100 * float(result["metrics"]["mIoU"])}
