"""Experiment plans: one training protocol per dataset, a list of entries, and the claims to test.

A plan is a YAML or JSON mapping (shipped ones live in ``segattn/configs/plans/``; a user's own file
works the same way)::

    name: survey-table
    description: one line shown in the report
    reference: fcn                 # entry the paired differences are taken against
    seeds: 8                       # default number of seeds (seed values 0 .. seeds-1); holds needs >= 6
    margin: 1.0                    # mIoU points: the equivalence / non-inferiority margin
    verdict_runs: all              # which runs decide: all (default) or non_collapsed (both are shown)
    protocols:                     # one training config per dataset; only the entry changes
      synthetic:
        config: synthetic/fcn_r18_synthetic.yaml   # a shipped config name or a path
        set: {schedule.iters: 200}                 # dotted overrides (as ``segattn train --set``)
    entries:
      - {name: fcn, model: fcn}
      - {name: ema-T3, model: generic, context: ema, context_kw: {num_stages: 3}}
      - {name: glore-noreason, model: generic, context: glore, reasoner: identity}
    claims:
      - {id: "1b", text: "EMA with T = 3 beats T = 1", kind: better, a: ema-T3, b: ema-T1}
      - {id: v2, text: "PPM beats GCNet", kind: better, a: ppm, b: gcnet, protocols: [relational]}

Entry keys: ``name`` (unique, ``[A-Za-z0-9._-]``), ``model`` (a registered model), ``context`` /
``context_kw`` (the ``generic`` model's module and its keywords), ``kwargs`` (further model
keywords), ``reasoner: identity`` (every ``LowRankBlock`` reasoner in the model replaced by
``IdentityReasoner``, all else equal), ``same_as`` (another entry that builds the very same network:
this entry's runs are not trained but copied from that entry's, with provenance; checked before any
run by :func:`segattn.compare.runner.check_same_as`) and ``note``. Claim kinds: ``better`` (``a`` beats ``b``),
``no_gain`` (``a`` adds nothing over ``b``), ``not_worse`` (``a`` loses less than the margin to ``b``),
``equivalent`` (every pair of ``entries`` within the margin), ``cheaper`` (``a``'s context-module
MACs at most ``ratio`` times ``b``'s; ``ratio`` defaults to 1) and ``fewer_collapses`` (``a``'s runs
collapse to the baseline less often than ``b``'s, Fisher's exact test). A claim with ``protocols``
(a list of the plan's dataset names) is judged on those datasets only (a task-specific control);
without it, on every dataset. The decision rules are in
:mod:`segattn.compare.claims`. Everything is checked when the plan is loaded, before any run starts.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from segattn.engine.config import CONFIG_DIR, apply_overrides, config_from_dict, load_config_dict
from segattn.registry import MODULES
from segattn.stats import PUBLISHED_SEEDS

PLAN_DIR = CONFIG_DIR / "plans"
NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
ENTRY_KEYS = ("name", "model", "context", "context_kw", "kwargs", "reasoner", "same_as", "note")
CLAIM_KINDS = ("better", "no_gain", "not_worse", "equivalent", "cheaper", "fewer_collapses")
CLAIM_KEYS = ("id", "text", "kind", "a", "b", "entries", "ratio", "protocols")
PLAN_KEYS = ("name", "description", "reference", "seeds", "margin", "verdict_runs", "protocols", "entries", "claims")
VERDICT_RUNS = ("all", "non_collapsed")


class PlanError(ValueError):
    """A plan that cannot run; the message names the file, the key and what was expected."""


@dataclass
class Entry:
    """One row of the comparison: a model (and context module) trained under the plan's protocol."""

    name: str
    model: str
    context: Optional[str] = None
    context_kw: Dict[str, Any] = field(default_factory=dict)
    kwargs: Dict[str, Any] = field(default_factory=dict)
    reasoner: Optional[str] = None
    same_as: Optional[str] = None
    note: str = ""

    def model_kwargs(self) -> Dict[str, Any]:
        """Keywords of ``create_model`` beyond the protocol's (``context``, ``context_kw``, ``kwargs``)."""
        kw = copy.deepcopy(self.kwargs)
        if self.context is not None:
            kw["context"] = self.context
        if self.context_kw:
            kw["context_kw"] = copy.deepcopy(self.context_kw)
        return kw

    def describe(self) -> str:
        parts = [self.model]
        if self.context:
            parts.append(self.context)
        parts += [f"{k}={v}" for k, v in sorted(self.context_kw.items())]
        parts += [f"{k}={v}" for k, v in sorted(self.kwargs.items())]
        if self.reasoner:
            parts.append(f"reasoner={self.reasoner}")
        if self.same_as:
            parts.append(f"(same network as {self.same_as})")
        return " ".join(parts)


@dataclass
class Claim:
    """A statement the numbers decide: ``better``/``no_gain``/``not_worse``/``cheaper`` (``a`` vs ``b``)
    or ``equivalent``; ``ratio`` is the bound of ``cheaper`` (context MACs of a <= ratio * b's)."""

    id: str
    text: str
    kind: str
    a: Optional[str] = None
    b: Optional[str] = None
    entries: List[str] = field(default_factory=list)
    ratio: float = 1.0
    protocols: List[str] = field(default_factory=list)  # the datasets it is judged on; empty: all


@dataclass
class Protocol:
    """The training config of one dataset: a config file plus overrides."""

    config: str
    set: Dict[str, Any] = field(default_factory=dict)

    def overrides(self) -> List[str]:
        return [f"{k}={json.dumps(v)}" for k, v in self.set.items()]


@dataclass
class Plan:
    name: str
    entries: List[Entry]
    protocols: Dict[str, Protocol]
    reference: str
    seeds: int = PUBLISHED_SEEDS
    margin: float = 1.0
    description: str = ""
    claims: List[Claim] = field(default_factory=list)
    source: str = ""
    verdict_runs: str = "all"

    def entry(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)

    def protocol(self, dataset: str) -> Protocol:
        if dataset not in self.protocols:
            raise PlanError(f"plan {self.name!r} has no protocol for dataset {dataset!r}; "
                            f"it has {sorted(self.protocols)}")
        return self.protocols[dataset]

    def claims_for(self, dataset: str) -> List[Claim]:
        """The claims judged on ``dataset``: those without ``protocols`` and those that name it."""
        return [c for c in self.claims if not c.protocols or dataset in c.protocols]


def list_plans() -> List[str]:
    """Names of the shipped plans."""
    return sorted(p.stem for p in PLAN_DIR.glob("*.yaml"))


def resolve_plan_path(plan: str) -> Path:
    """A file path as given, else a shipped plan name (``survey-table``)."""
    for candidate in (Path(plan), PLAN_DIR / plan, PLAN_DIR / f"{plan}.yaml"):
        if candidate.is_file():
            return candidate
    raise PlanError(f"plan {plan!r} not found: not a file and not a shipped plan ({', '.join(list_plans())})")


def _read(path: Path) -> Dict[str, Any]:
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            from segattn.engine.config_files import yaml_loader

            data = yaml.load(text, Loader=yaml_loader())  # a repeated key is an error, not the last one kept
    except ImportError as exc:
        raise PlanError(f"reading {path} needs PyYAML (pip install 'segattn[yaml]'); or write the plan as JSON") from exc
    except Exception as exc:  # YAML / JSON syntax errors: name the file, keep one line
        raise PlanError(f"plan {path} is not valid {path.suffix[1:].upper() or 'YAML'}: "
                        f"{' '.join(str(exc).split())[:300]}") from None
    if not isinstance(data, dict):
        raise PlanError(f"plan {path} must hold a mapping, got {type(data).__name__}")
    return data


def _check_keys(data: Dict[str, Any], allowed: Sequence[str], where: str) -> None:
    if not isinstance(data, dict):
        raise PlanError(f"{where} must be a mapping, got {type(data).__name__}")
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise PlanError(f"unknown key(s) {unknown} in {where}; accepted: {list(allowed)}")


def _entry(data: Any, where: str) -> Entry:
    _check_keys(data, ENTRY_KEYS, where)
    for key in ("name", "model"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise PlanError(f"{where}: '{key}' must be a non-empty string")
    if not NAME_RE.match(data["name"]):
        raise PlanError(f"{where}: name {data['name']!r} may only use letters, digits, '.', '_' and '-'")
    for key in ("context_kw", "kwargs"):
        if not isinstance(data.get(key, {}), dict):
            raise PlanError(f"{where}: '{key}' must be a mapping")
    if data.get("reasoner") not in (None, "identity"):
        raise PlanError(f"{where}: reasoner must be 'identity' (or absent), got {data['reasoner']!r}")
    if "same_as" in data and (not isinstance(data["same_as"], str) or not data["same_as"]):
        raise PlanError(f"{where}: same_as must name another entry, got {data['same_as']!r}")
    return Entry(**{k: copy.deepcopy(v) for k, v in data.items()})


def _claim(data: Any, where: str, names: Sequence[str], datasets: Sequence[str]) -> Claim:
    _check_keys(data, CLAIM_KEYS, where)
    kind = data.get("kind")
    if kind not in CLAIM_KINDS:
        raise PlanError(f"{where}: kind must be one of {list(CLAIM_KINDS)}, got {kind!r}")
    if kind == "equivalent":
        if "a" in data or "b" in data:
            raise PlanError(f"{where}: an 'equivalent' claim names its entries as 'entries: [x, y, ...]', not 'a'/'b'")
    else:
        absent = [k for k in ("a", "b") if not isinstance(data.get(k), str) or not data.get(k)]
        if absent:
            raise PlanError(f"{where}: a {kind!r} claim needs 'a' and 'b' (entry names), missing or not a string: "
                            f"{absent}; e.g. {{id: x1, text: 'nl beats fcn', kind: {kind}, a: nl, b: fcn}}")
        if "entries" in data:
            raise PlanError(f"{where}: 'entries' belongs to 'equivalent' claims; a {kind!r} claim uses 'a' and 'b'")
    ratio = data.get("ratio", 1.0)
    if "ratio" in data and kind != "cheaper":
        raise PlanError(f"{where}: 'ratio' belongs to 'cheaper' claims only")
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or ratio <= 0:
        raise PlanError(f"{where}: ratio must be a positive number, got {ratio!r}")
    refs = list(data.get("entries") or []) if kind == "equivalent" else [data.get("a"), data.get("b")]
    if kind == "equivalent" and (not isinstance(data.get("entries"), list) or len(refs) < 2):
        raise PlanError(f"{where}: an 'equivalent' claim needs 'entries': a list of at least two entry names")
    missing = [r for r in refs if r not in names]
    if missing:
        raise PlanError(f"{where}: unknown entr{'y' if len(missing) == 1 else 'ies'} {missing}; plan entries: {list(names)}")
    repeated = sorted({r for r in refs if refs.count(r) > 1})
    if repeated:
        raise PlanError(f"{where}: compares entr{'y' if len(repeated) == 1 else 'ies'} {repeated} with itself; "
                        f"expected {'two different entries' if kind != 'equivalent' else 'distinct entries'}")
    protocols = data.get("protocols", [])
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols) or (
            "protocols" in data and not protocols):
        raise PlanError(f"{where}: protocols must be a non-empty list of the plan's dataset names "
                        f"{list(datasets)}, got {protocols!r}")
    unknown = [p for p in protocols if p not in datasets]
    if unknown:
        raise PlanError(f"{where}: protocols {unknown} are not datasets of the plan; it has {list(datasets)}")
    return Claim(id=str(data.get("id", "")), text=str(data.get("text", "")), kind=kind, a=data.get("a"),
                 b=data.get("b"), entries=[str(r) for r in data.get("entries") or []], ratio=float(ratio),
                 protocols=list(protocols))


def plan_from_dict(data: Dict[str, Any], source: str = "<plan>") -> Plan:
    """Build and check a :class:`Plan` (names, kinds, references, protocol configs)."""
    _check_keys(data, PLAN_KEYS, f"plan {source}")
    entries_raw = data.get("entries")
    if not isinstance(entries_raw, list) or not entries_raw:
        raise PlanError(f"plan {source}: 'entries' must be a non-empty list")
    entries = [_entry(e, f"plan {source}, entry {i + 1}") for i, e in enumerate(entries_raw)]
    names = [e.name for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PlanError(f"plan {source}: entry names must be unique, repeated: {dup}")
    for e in entries:
        if e.same_as is None:
            continue
        twin = next((t for t in entries if t.name == e.same_as), None)
        if twin is None or twin is e:
            raise PlanError(f"plan {source}, entry {e.name!r}: same_as {e.same_as!r} must name another entry; "
                            f"entries: {names}")
        if twin.same_as is not None:
            raise PlanError(f"plan {source}, entry {e.name!r}: same_as {e.same_as!r}, which is itself same_as "
                            f"{twin.same_as!r}; name the entry that trains ({twin.same_as!r})")
    reference = data.get("reference", names[0])
    if reference not in names:
        raise PlanError(f"plan {source}: reference {reference!r} is not an entry; entries: {names}")
    seeds = data.get("seeds", PUBLISHED_SEEDS)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise PlanError(f"plan {source}: seeds must be an integer >= 1, got {seeds!r}")
    margin = data.get("margin", 1.0)
    if not isinstance(margin, (int, float)) or isinstance(margin, bool) or margin <= 0:
        raise PlanError(f"plan {source}: margin must be a positive number of mIoU points, got {margin!r}")
    verdict_runs = data.get("verdict_runs", "all")
    if verdict_runs not in VERDICT_RUNS:
        raise PlanError(f"plan {source}: verdict_runs must be one of {list(VERDICT_RUNS)}, got {verdict_runs!r}")
    protocols_raw = data.get("protocols")
    if not isinstance(protocols_raw, dict) or not protocols_raw:
        raise PlanError(f"plan {source}: 'protocols' must map dataset names to {{config, set}}")
    protocols = {}
    for ds, p in protocols_raw.items():
        _check_keys(p, ("config", "set"), f"plan {source}, protocol {ds!r}")
        if not isinstance(p.get("config"), str):
            raise PlanError(f"plan {source}, protocol {ds!r}: 'config' must be a config name or path")
        if not isinstance(p.get("set", {}), dict):
            raise PlanError(f"plan {source}, protocol {ds!r}: 'set' must map dotted keys to values")
        protocols[str(ds)] = Protocol(p["config"], dict(p.get("set") or {}))
    if not isinstance(data.get("claims") or [], list):
        raise PlanError(f"plan {source}: 'claims' must be a list of mappings, got {type(data['claims']).__name__}")
    claims = [_claim(c, f"plan {source}, claim {i + 1}", names, list(protocols))
              for i, c in enumerate(data.get("claims") or [])]
    ids = [c.id for c in claims if c.id]
    dup_ids = sorted({i for i in ids if ids.count(i) > 1})
    if dup_ids:
        raise PlanError(f"plan {source}: claim ids must be unique (the report names claims by id), repeated: {dup_ids}")
    name = data.get("name", Path(source).stem)
    if "name" in data and not (isinstance(name, str) and NAME_RE.match(name)):
        raise PlanError(f"plan {source}: name {name!r} may only use letters, digits, '.', '_' and '-' "
                        "(it names the default --out folder)")
    return Plan(name=str(name), entries=entries, protocols=protocols,
                reference=reference, seeds=seeds, margin=float(margin), description=str(data.get("description", "")),
                claims=claims, source=source, verdict_runs=verdict_runs)


def load_plan(plan: str) -> Plan:
    """Read a plan file or shipped plan name and check it (see the module docstring)."""
    path = resolve_plan_path(plan)
    return plan_from_dict(_read(path), str(path))


def protocol_dict(plan: Plan, dataset: str) -> Dict[str, Any]:
    """The protocol's merged config data (base chain + overrides), before any entry is applied."""
    proto = plan.protocol(dataset)
    try:
        data = load_config_dict(proto.config)
    except FileNotFoundError as exc:
        raise PlanError(f"plan {plan.name!r}, protocol {dataset!r}: {exc}") from None
    return apply_overrides(data, proto.overrides())


def entry_config_dict(plan: Plan, dataset: str, entry: Entry, seed: int, work_dir: str,
                      extra: Sequence[str] = ()) -> Dict[str, Any]:
    """Config data of one run: the protocol with the entry's model, the seed and the work dir."""
    data = protocol_dict(plan, dataset)
    data = apply_overrides(data, list(extra))
    model = data.setdefault("model", {})
    model["name"] = entry.model
    kwargs = {k: v for k, v in dict(model.get("kwargs") or {}).items() if k not in ("context", "context_kw")}
    kwargs.update(entry.model_kwargs())
    model["kwargs"] = kwargs
    train = data.setdefault("train", {})
    train["seed"] = int(seed)
    train["work_dir"] = work_dir
    data["name"] = f"{plan.name}-{entry.name}-seed{seed}"
    return data


#: config keys every run sets itself (:func:`entry_config_dict`): an override of them would be dropped
PER_RUN_KEYS = {
    "name": "name is the plan's, the entry's and the seed's",
    "model.name": "model is its entry's (entries: model)",
    "model.kwargs.context": "context module is its entry's (entries: context)",
    "model.kwargs.context_kw": "module keywords are its entry's (entries: context_kw)",
    "train.seed": "seed comes from --seeds / --first-seed",
    "train.work_dir": "work dir is runs/<entry>/seed<k> under --out",
}


def _per_run_root(key: str) -> str:
    return next(k for k in PER_RUN_KEYS if key == k or key.startswith(k + "."))


def validate_plan(plan: Plan, dataset: str, extra: Sequence[str] = ()) -> None:
    """Check before any run: the plan has a protocol for ``dataset``, its config loads, every model
    and context module exists and takes the entry's keywords (modules are built at 16 channels, which
    costs nothing), and every entry's model builds with its keywords and ``reasoner`` (on the meta
    device: no memory, no time)."""
    import segattn.modules  # noqa: F401  (registers the context modules)
    from segattn.models import list_models

    proto = plan.protocol(dataset)  # a dataset the plan has no protocol for, named before any entry
    for source, keys in ((f"plan {plan.name!r}, protocol {dataset!r}: set", list(proto.set)),
                         ("--set", [item.split("=", 1)[0].strip() for item in extra])):
        for key in keys:
            if key in PER_RUN_KEYS or any(key.startswith(k + ".") for k in PER_RUN_KEYS):
                raise PlanError(f"{source} {key}: each run's {PER_RUN_KEYS[_per_run_root(key)]}, so the "
                                "override would be dropped")
    models = set(list_models())
    for e in plan.entries:
        where = f"plan {plan.name!r}, entry {e.name!r}"
        if e.model not in models:
            raise PlanError(f"{where}: unknown model {e.model!r}; registered: {sorted(models)}")
        if e.context is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the run itself shows the module's warnings
                    MODULES.create(e.context, 16, **e.context_kw)
            except (TypeError, ValueError, KeyError) as exc:
                raise PlanError(f"{where}: context {e.context!r} with {e.context_kw}: {exc}") from None
        try:
            cfg = config_from_dict(entry_config_dict(plan, dataset, e, 0, "unused", extra))
        except (TypeError, ValueError, KeyError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise PlanError(f"{where}: its training config is invalid: {msg}") from None
        _check_entry_model(cfg, e, where)


def ablate_reasoners(model: Any) -> int:
    """Replace every ``LowRankBlock``'s reasoner by ``IdentityReasoner``; returns how many were replaced.

    Only shape-preserving reasoners can go (their output channels equal their input's), which holds
    for GloRe, SGR, Beyond Grids and LatentGNN; anything else raises ``ValueError``.
    """
    from segattn.lowrank import IdentityReasoner, LowRankBlock

    count = 0
    for name, module in model.named_modules():
        if isinstance(module, LowRankBlock) and not isinstance(module.reasoner, IdentityReasoner):
            r = module.reasoner
            cin, cout = getattr(r, "channels", None), getattr(r, "out_channels", None)
            if cin is not None and cout is not None and cin != cout:
                raise ValueError(f"reasoner of {name} maps {cin} -> {cout} channels; an identity cannot replace it")
            module.reasoner = IdentityReasoner()
            count += 1
    if count == 0:
        raise ValueError("reasoner: identity was asked, but the model has no LowRankBlock with a reasoner")
    return count


def _check_entry_model(cfg: Any, entry: Entry, where: str) -> None:
    """Build the entry's model as its run will (its keywords and values checked, ``reasoner: identity``
    applied) on the meta device: no memory, no weights read, the random state untouched; else on the CPU."""
    import torch

    import segattn.data  # noqa: F401  (registers the datasets)
    from segattn.engine.build import build_model
    from segattn.registry import DATASETS

    model_cfg = cfg.model.model_copy(update={"pretrained": None})
    classes = cfg.data.dataset_kwargs.get("num_classes") or DATASETS.meta(cfg.data.dataset).get("classes") or 2
    error: Optional[Exception] = None
    for device in ("meta", "cpu"):  # a module that computes at construction may not build on meta
        try:
            with warnings.catch_warnings(), torch.random.fork_rng(devices=[]), torch.device(device):
                warnings.simplefilter("ignore")  # the run itself shows the model's warnings
                model = build_model(model_cfg, int(classes))
                if entry.reasoner == "identity":
                    ablate_reasoners(model)
            return
        except Exception as exc:  # noqa: BLE001 - reported below, named by entry
            error = exc  # the CPU's error is the one the run would meet
    msg = error.args[0] if isinstance(error, KeyError) and error.args else error
    raise PlanError(f"{where}: its model cannot be built: {msg}") from None
