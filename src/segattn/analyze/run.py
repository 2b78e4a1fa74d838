"""Load a trained run, build its validation batches, run every measurement, store ``analysis.json``.

A *run* is a ``segattn compare`` run folder (``runs/<entry>/seed<k>/`` holding ``final.pt``), a
``final.pt`` file, or a training checkpoint written by ``segattn train`` (``last.pt`` / ``best.pt``:
config and meta travel with it). The measurements run on the validation split of the run's own
config, in eval mode, on CPU unless told otherwise.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from segattn.analyze import measure
from segattn.compare.rundir import ANALYSIS
from segattn.engine.short import shorten_images
from segattn.engine.workdir import WorkDirError, WorkDirLock
from segattn.errors import SegattnError
from segattn.io import atomic_write_json

VERSION = 10  # bump when a measurement changes: stored analyses of another version are redone
# 3: TV distances and cue mass only for rows that are weight distributions (not GloRe / SGR)
# 4: the model sees its inputs at the run's eval scale (CamVid protocol: 1/3); same numbers at scale 1
# 5: segments under 0.01 % of the image left out of the small/medium/large bins (none on the synthetic set)
# 6: input noise and FGSM in fractions of the pixel range on standardised inputs (CamVid); [0, 1] inputs as before
# 7: PGD and the gradient-masking check; the "survey" step (metrics that test the statements, issue 30)
# 8: the label-aware box filter (ebox7, the edge-preserving control); grad_backbone at a neck's output
# 9: the within-class roughness (the smoothing claim's metric) in the survey step
# 10: bases_recon_error_small on the segments of acc_small's bin (areas in pixels), not <= 2 % of the cells
#     (later, no bump: the survey step's taps reached CCNet, ISA, PSANet and OCR, which adds their path and mean-row
#     metrics and changes no other number; a bump would mark every published analysis stale, and their runs' weights
#     are gone. Analyses of those four stored before lack `meanrow_drop`: `segattn analyze --force` re-measures them.)
# A stored analysis of a version named here is brought up to VERSION by redoing only the steps that changed
# since (the others' numbers are kept): versions 8 and 9 -> 10 redo "survey" (seconds per synthetic run). When VERSION
# moves on, each entry lists every step changed since its version (or is dropped: made afresh).
UPGRADE = {8: ("survey",), 9: ("survey",)}
Log = Callable[[str], None]
PathLike = Union[str, Path]


def _print(msg: str) -> None:
    print(msg, flush=True)


def checkpoint_path(run: PathLike) -> Path:
    """The weights file of ``run`` (a compare run folder's ``final.pt``, or the file itself)."""
    p = Path(run)
    if p.is_dir():
        if (p / "final.pt").is_file():
            return p / "final.pt"
        raise SegattnError(f"{p} holds no final.pt (runs finished before `segattn compare` kept weights have "
                           "none: rerun them, or pass a checkpoint written by `segattn train`)")
    if not p.is_file():
        raise SegattnError(f"checkpoint {p} does not exist")
    return p


def _checkpoint(run: PathLike) -> Tuple[Path, Dict[str, Any], Any]:
    """(weights path, checkpoint dict, run config) of a run folder or checkpoint file, checked."""
    from segattn.engine.config import config_from_dict
    from segattn.engine.run import read_checkpoint

    path = checkpoint_path(run)
    ckpt = read_checkpoint(str(path))
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("meta"), dict) \
            or "num_classes" not in ckpt["meta"]:
        raise SegattnError(f"{path} is not a segattn training checkpoint or compare run (no 'config' and 'meta')")
    return path, ckpt, config_from_dict({k: v for k, v in ckpt["config"].items() if not k.startswith("_")})


def load_run(run: PathLike) -> Tuple[nn.Module, Any, Dict[str, Any], Dict[str, Any]]:
    """(eval model, run config, meta, entry ``{name, reasoner}``) of a run folder or checkpoint file."""
    from segattn.compare.plan import ablate_reasoners
    from segattn.engine import build
    from segattn.engine.run import load_weights

    path, ckpt, cfg = _checkpoint(run)
    meta = dict(ckpt["meta"])
    entry = dict(ckpt.get("entry") or {"name": cfg.name, "reasoner": None})
    model = build.build_model(cfg.model, int(meta["num_classes"]))
    if entry.get("reasoner") == "identity":
        ablate_reasoners(model)
    load_weights(model, ckpt, str(path))
    return model.eval(), cfg, meta, entry


def eval_scale(cfg: Any) -> float:
    """The one input scale of the run's evaluation (``eval.scales``), at which the analysis feeds the
    model. ``SegattnError`` for an evaluation that is not one whole-image pass (sliding windows,
    several scales, flip): the measurements need one forward per image."""
    e = cfg.eval
    scales = list(e.scales or [1.0])
    if e.mode != "whole" or e.flip or len(scales) != 1:
        raise SegattnError(f"run config {cfg.name!r} evaluates with mode={e.mode!r}, scales={scales}, flip={e.flip}; "
                           "analyze measures one whole-image forward per image, so it needs eval.mode 'whole', one "
                           "scale and no flip")
    return float(scales[0])


def validation_batches(cfg: Any, max_images: Optional[int] = None, device: str = "cpu") -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """The run's validation images and masks in batches of ``data.val_batch_size`` (first ``max_images``)."""
    from segattn.engine import build

    _, val = build.build_datasets(cfg)
    if val is None:
        raise SegattnError(f"config {cfg.name!r} has no validation split (data.val_split); analyze needs one")
    n = len(val) if max_images is None else min(len(val), int(max_images))
    n = shorten_images(n)  # SEGATTN_DOCS_SHORT=1: a smoke run
    bs = int(cfg.data.val_batch_size)
    batches = []
    for start in range(0, n, bs):
        items = [val[i] for i in range(start, min(n, start + bs))]
        if len({tuple(x.shape) for x, _ in items}) != 1:  # sizes differ: one image per batch
            batches += [(x[None].to(device), m[None].long().to(device)) for x, m in items]
            continue
        batches.append((torch.stack([x for x, _ in items]).to(device), torch.stack([m for _, m in items]).long().to(device)))
    return batches


STEPS = ("robustness", "features", "segments", "em", "gradients", "survey")


def pixel_unit(cfg: Any) -> torch.Tensor:
    """Per input channel, the change of the model's input for a change of the whole pixel range:
    ``255 / data.std`` when the data pipeline standardises (``data.transforms``), 1 for datasets that
    give [0, 1] images (the synthetic set)."""
    if not cfg.data.transforms:
        return torch.ones(1)
    return 255.0 / torch.tensor([float(v) for v in cfg.data.std])


def analyze_model(model: nn.Module, batches: Sequence[Tuple[torch.Tensor, torch.Tensor]], num_classes: int,
                  ignore_index: int, synthetic: bool = False, log: Log = _print, tag: str = "",
                  unit: Optional[torch.Tensor] = None, only: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Every measurement of :mod:`segattn.analyze.measure` on one model (or the steps named in ``only``);
    a progress line per step (``unit``: :func:`pixel_unit` of the inputs, for the perturbations' size)."""
    out: Dict[str, Any] = {"module": measure.module_name(measure.context_slot(model))}
    em = measure.em_mappers(model)
    out["em_stages"] = em[0].num_stages if em else None
    steps: Dict[str, Callable[[], Dict[str, Any]]] = {
        "robustness": lambda: measure.measure_robustness(model, batches, num_classes, ignore_index, pixel_unit=unit),
        "features": lambda: measure.measure_features(model, batches, ignore_index, synthetic),
        "segments": lambda: measure.measure_segments(model, batches, ignore_index),
        "em": lambda: {**measure.measure_stage_swap(model, batches, num_classes, ignore_index),
                       **measure.em_curves(model, batches, synthetic)},
        "gradients": lambda: measure.measure_gradients(model, batches, ignore_index),
        "survey": lambda: measure.measure_survey(model, batches, num_classes, ignore_index, synthetic),
    }
    if only is not None:
        steps = {name: step for name, step in steps.items() if name in only}
    for i, (name, step) in enumerate(steps.items(), 1):
        t0 = time.time()
        out.update(step())
        log(f"{tag}analyze {name} ({i}/{len(steps)}) done in {time.time() - t0:.1f} s")
    return out


def _read_stored(run: PathLike) -> Optional[Dict[str, Any]]:
    try:
        old = json.loads((Path(run) / ANALYSIS).read_text())
    except (OSError, ValueError):
        return None
    return old if isinstance(old, dict) else None


def stored_analysis(run: PathLike, max_images: Optional[int] = None) -> Optional[Dict[str, Any]]:
    """The analysis stored in a run folder when it was made by this version with these settings
    (None otherwise, an unreadable file included: it is redone)."""
    old = _read_stored(run)
    ok = old is not None and old.get("settings") == {"version": VERSION, "max_images": max_images}
    return old if ok else None


def upgrade_steps(old: Optional[Dict[str, Any]], max_images: Optional[int] = None) -> Optional[Tuple[str, ...]]:
    """The steps to redo to bring the stored analysis ``old`` up to :data:`VERSION` (:data:`UPGRADE`), or
    None when it must be made afresh (another version, other settings, nothing stored)."""
    settings = (old or {}).get("settings")
    if not isinstance(settings, dict) or settings.get("max_images") != max_images:
        return None
    return UPGRADE.get(settings.get("version"))  # type: ignore[arg-type]


def analyze_run(run: PathLike, max_images: Optional[int] = None, threads: Optional[int] = None,
                log: Log = _print, force: bool = False, tag: str = "") -> Dict[str, Any]:
    """Analyse one run; for a compare run folder the result is stored (atomically) in its
    ``analysis.json`` and reused by the next call unless ``force`` or it was made with other settings."""
    p = Path(run)
    stored = p / ANALYSIS if p.is_dir() else None
    settings = {"version": VERSION, "max_images": max_images}
    old = None if force else stored_analysis(p, max_images)
    if old is not None:
        return old
    previous = None if force or stored is None else _read_stored(p)
    only = upgrade_steps(previous, max_images)
    if threads:
        torch.set_num_threads(int(threads))
    model, cfg, meta, entry = load_run(run)
    scale = eval_scale(cfg)
    batches = validation_batches(cfg, max_images)
    synthetic = cfg.data.dataset == "synthetic"
    torch.manual_seed(0)
    t0 = time.time()
    with measure.at_eval_scale(model, scale):
        result = analyze_model(model, batches, int(meta["num_classes"]), int(meta.get("ignore_index", 255)),
                               synthetic, log, tag, pixel_unit(cfg), only)
    if only is not None and previous is not None:  # the other steps' numbers are kept
        result = {**previous, **result}
    result.update({"entry": entry.get("name"), "seed": cfg.train.seed, "checkpoint": str(checkpoint_path(run)),
                   "images": sum(int(b[0].shape[0]) for b in batches), "dataset": cfg.data.dataset, "eval_scale": scale,
                   "seconds": round(time.time() - t0, 1), "settings": settings})
    if stored is not None:
        from segattn.engine.metrics import json_safe

        atomic_write_json(stored, json_safe(result))
    return result


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def analysable(run: Path, max_images: Optional[int] = None) -> bool:
    """A compare run folder that holds its weights (``final.pt``), or an analysis stored by this version
    with these settings: an archived run, whose weights were dropped once it was measured, still counts
    (its stored analysis is read, it cannot be measured again)."""
    return (run / "final.pt").is_file() or stored_analysis(run, max_images) is not None


def expand_runs(paths: Sequence[PathLike]) -> List[Path]:
    """Run folders / checkpoint files named by ``paths``; a compare output folder stands for every run
    under it (``runs/*/seed*`` that are :func:`analysable`). Checked up front: a path that holds no weights is
    one ``SegattnError`` before anything is measured."""
    found: List[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir() and (p / "runs").is_dir() and not (p / "final.pt").is_file():
            runs = sorted(d for d in p.glob("runs/*/seed*") if analysable(d))
            if not runs:
                raise SegattnError(f"{p} is a compare folder without any run holding final.pt (runs finished before "
                                   "`segattn compare` kept weights have none)")
            found += runs
        elif p.is_dir() and analysable(p):
            found.append(p)
        else:
            checkpoint_path(p)
            found.append(p)
    if not found:
        raise SegattnError("no run or checkpoint given")
    return found


def claim_analysis(run: Path) -> Optional[WorkDirLock]:
    """Take the run folder's lock (the one ``segattn compare`` trains under), or None when a live
    process holds it: several processes analysing one compare folder share its runs."""
    claim = WorkDirLock(str(run))
    try:
        claim.acquire()
    except WorkDirError:
        return None
    return claim


def analyze_runs(runs: Sequence[PathLike], out: PathLike, command: str, max_images: Optional[int] = None,
                 threads: Optional[int] = None, force: bool = False, log: Log = _print,
                 copy_to: Optional[PathLike] = None, poll_s: float = 15.0,
                 split: Optional[int] = None, report: bool = True) -> Optional[Dict[str, Any]]:
    """Analyse every run (each stored beside its weights when it is a run folder, so an interrupted call
    resumes where it stopped) and write the report into ``out``. ``copy_to``: a compare folder root;
    each run's ``analysis.json`` is also copied to ``copy_to/runs/<entry>/seed<k>/``.

    Several processes may analyse the same runs at once (one per core): each run folder is locked
    while it is measured, a process leaves locked runs to their owner and, once it has nothing else
    to do, waits for them (checking every ``poll_s`` seconds) and reads their stored analysis; a
    dead owner's lock is taken over. Every process writes the same report at the end. ``split``: the
    first seed of the replication range (the claims are judged on both ranges, see
    :func:`segattn.analyze.report.aggregate`). ``report=False``: only measure and store (a helper
    process of :func:`analyze_plan`'s ``-j``); returns None."""
    from segattn.analyze.report import write_report

    paths = expand_runs(runs)
    for p in paths:  # every run's evaluation checked before anything is measured
        if p.is_dir() and not (p / "final.pt").is_file():  # measured and archived without its weights
            if force or stored_analysis(p, max_images) is None:
                raise SegattnError(f"{p} holds no final.pt and no analysis of this version (version {VERSION}, "
                                   f"max_images {max_images}) to reuse: retrain the run")
            continue
        eval_scale(_checkpoint(p)[2])
    results: List[Optional[Dict[str, Any]]] = [None] * len(paths)
    pending = list(range(len(paths)))
    t_start, measured, told = time.time(), 0, set()
    while pending:
        busy = []
        for i in pending:
            p = paths[i]
            tag = f"[{i + 1}/{len(paths)}] {p}: "
            claim = claim_analysis(p) if p.is_dir() else None
            if p.is_dir() and claim is None:
                busy.append(i)
                if i not in told:
                    told.add(i)
                    log(f"{tag}being analysed by another process; left to it")
                continue
            try:
                cached = p.is_dir() and stored_analysis(p, max_images) is not None
                # with force, an analysis another process stored after this one started is not redone
                redo = force and not (cached and (p / ANALYSIS).stat().st_mtime >= t_start)
                results[i] = res = analyze_run(p, max_images, threads, log, redo, tag)
            finally:
                if claim is not None:
                    claim.release()
            measured += 1
            left = (time.time() - t_start) / measured * sum(r is None for r in results)
            log(f"{tag}{'stored analysis reused' if cached and not redo else 'analysed'}; about {left:.0f} s left")
            if copy_to is not None and p.is_dir() and p.parent.parent.name == "runs":
                dest = Path(copy_to) / "runs" / p.parent.name / p.name / ANALYSIS
                from segattn.engine.metrics import json_safe

                atomic_write_json(dest, json_safe(res))
        if busy and len(busy) == len(pending):
            log(f"waiting for {len(busy)} run(s) being analysed by other processes")
            time.sleep(poll_s)
        pending = busy
    if not report:
        return None
    rep = write_report([r for r in results if r is not None], out, command, split)
    log(f"analysis report: {rep['paths']['markdown']}")
    return rep


def measure_finished_run(rdir: PathLike, log: Log = _print) -> Optional[Dict[str, Any]]:
    """``segattn compare --analyze``: analyse one run as soon as it finished, under the lock its trainer
    still holds, and store its ``analysis.json`` (a stored one of this version is kept). A failure is
    one log line, not an error: the run is finished and the other runs go on; the ``--analyze`` step
    after the runs measures it again and reports the error then. Returns the analysis, or None."""
    p = Path(rdir)
    tag = f"{p.parent.name} {p.name}: "
    try:
        return analyze_run(p, log=log, tag=tag)
    except Exception as exc:  # noqa: BLE001 - reported, and raised again by the step after the runs
        from segattn.errors import error_message

        log(f"{tag}analysis failed ({error_message(exc)}); the --analyze step after the runs tries again")
        return None


def analyze_plan(args: Any, plan: Any, out: Path) -> Dict[str, Any]:
    """The ``--analyze`` step of ``segattn compare`` (wired in by :mod:`segattn.cli`): every finished run
    of the plan with ``final.pt`` or a current stored analysis (:func:`analysable`; ``--seeds`` seeds from
    ``--first-seed``, twice as many with ``--replicate``) through :func:`analyze_runs`; the report goes to
    ``--report-dir`` (else ``--out``). Entries with ``same_as`` are left out: their runs are copies of
    their twins', and the same numbers twice would only enlarge the report's Holm family."""
    n_seeds = args.seeds or plan.seeds
    replicate = bool(getattr(args, "replicate", False))
    span = 2 * n_seeds if replicate else n_seeds
    first = int(getattr(args, "first_seed", 0) or 0)
    names = [e.name for e in plan.entries if e.same_as is None]  # a same_as entry's runs are copies: same numbers
    runs = [out / "runs" / n / f"seed{s}" for s in range(first, first + span) for n in names
            if analysable(out / "runs" / n / f"seed{s}") and (out / "runs" / n / f"seed{s}" / "result.json").is_file()]
    if not runs:
        raise SegattnError(f"--analyze: no finished run under {out} holds final.pt (runs finished before compare "
                           "kept weights have none)")
    target = args.report_dir or out
    cmd = (f"segattn compare {args.plan} --dataset {args.dataset} --seeds {n_seeds}"
           + (f" --first-seed {first}" if first else "") + f" --out {out} --report-only --analyze")
    if replicate:
        cmd += " --replicate"
    if args.report_dir:
        cmd += f" --report-dir {args.report_dir}"
    jobs = max(1, int(getattr(args, "jobs", 1) or 1))
    with _helpers(jobs - 1, runs, args.threads) as done:
        rep = analyze_runs(runs, target, cmd, threads=args.threads, copy_to=args.report_dir,
                           split=first + n_seeds if replicate else None)
    done()
    return rep


def _helper_measure(runs: List[Path], threads: int, version: int) -> None:
    """One ``-j`` helper: measure and store ``runs`` beside the parent process, which runs analysis
    ``version``. A helper started after the analysis code changed under a running command would store
    another version than its parent and the two would re-measure each other's runs: it refuses."""
    if version != VERSION:
        raise SegattnError(f"--analyze -j: the analysis code changed while this command ran (version {version} "
                           f"when it started, {VERSION} now); its runs were measured at version {version} by the "
                           "main process alone: run the command again")
    analyze_runs(runs, ".", "", threads=threads, report=False)


@contextlib.contextmanager
def _helpers(n: int, runs: Sequence[Path], threads: Optional[int]) -> Iterator[Callable[[], None]]:
    """``n`` helper processes that measure ``runs`` beside this one (``segattn compare -j N --analyze``:
    N processes share the runs through their folder locks, as N commands on one ``--out`` would);
    yields a function that waits for them and raises their first error."""
    if n < 1:
        yield lambda: None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))
    futures = [pool.submit(_helper_measure, list(runs), threads or 1, VERSION) for _ in range(n)]

    def wait() -> None:
        for f in futures:
            f.result()

    try:
        yield wait
    finally:
        pool.shutdown(wait=True)


__all__ = ["ANALYSIS", "analyze_plan", "checkpoint_path", "load_run", "eval_scale", "pixel_unit", "validation_batches", "analyze_model",
           "stored_analysis", "analyze_run", "expand_runs", "claim_analysis", "analyze_runs"]
