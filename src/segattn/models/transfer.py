"""Start a model from a saved folder of the same architecture, possibly for another number of classes.

:func:`init_from_folder` loads every tensor of a ``save_pretrained`` / converted-zoo folder into a
model built with the folder's keywords. The tensors shaped by the class count (the decode and
auxiliary classifiers, EncNet's class-presence layer, any tensor whose only differing dimension is
the class count) keep their fresh initialisation when the counts differ; the auxiliary head may be
switched on (fresh) or off (its tensors ignored). Anything else that does not fit is one
:class:`InitError` naming the keys. ``segattn train --init FOLDER`` (config key ``model.init``) and
``create_model(..., pretrained=FOLDER)`` use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

from torch import Tensor, nn

from segattn.errors import SegattnError
from segattn.models.folder import load_pretrained_state, read_pretrained_config

AUX_PREFIX = "aux_head."


class InitError(SegattnError, ValueError):
    """A folder whose weights cannot initialise the model (another architecture, a damaged file)."""


@dataclass
class InitReport:
    """What :func:`init_from_folder` did: tensor names loaded, re-initialised and ignored."""

    folder: str
    name: str
    folder_classes: int
    num_classes: int
    loaded: List[str] = field(default_factory=list)
    reinitialised: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)

    def table(self) -> str:
        """A few lines for the terminal: tensors per top-level part, and the re-initialised names."""
        parts: Dict[str, List[int]] = {}
        for col, names in enumerate((self.loaded, self.reinitialised, self.ignored)):
            for key in names:
                parts.setdefault(key.split(".", 1)[0], [0, 0, 0])[col] += 1
        classes = (f"{self.folder_classes} classes" if self.folder_classes == self.num_classes
                   else f"{self.folder_classes} -> {self.num_classes} classes")
        lines = [f"init from {self.folder} ({self.name}, {classes}): tensors",
                 f"  {'part':<12} {'loaded':>7} {'re-initialised':>15} {'ignored':>8}"]
        for part, (a, b, c) in parts.items():
            lines.append(f"  {part:<12} {a:>7} {b:>15} {c:>8}")
        lines.append(f"  {'total':<12} {len(self.loaded):>7} {len(self.reinitialised):>15} {len(self.ignored):>8}")
        for title, names in (("re-initialised", self.reinitialised), ("ignored", self.ignored)):
            if names:
                shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
                lines.append(f"  {title}: {shown}")
        return "\n".join(lines)


def _class_shaped(theirs: Sequence[int], own: Sequence[int], old_k: int, new_k: int) -> bool:
    """True when the shapes differ only in dimensions that hold the class count (``old_k`` -> ``new_k``)."""
    if old_k == new_k or len(theirs) != len(own):
        return False
    pairs = [(a, b) for a, b in zip(theirs, own) if a != b]
    return bool(pairs) and all(a == old_k and b == new_k for a, b in pairs)


def split_state(own: Dict[str, Tensor], state: Dict[str, Tensor], old_k: int,
                new_k: int) -> Tuple[List[str], List[str], List[str], Dict[str, List[str]]]:
    """``(loaded, reinitialised, ignored, problems)`` for loading ``state`` into a model whose state is
    ``own``; ``problems`` maps ``missing`` / ``unexpected`` / ``shape`` to the keys that make it fail."""
    loaded, fresh, ignored = [], [], []
    problems: Dict[str, List[str]] = {"missing": [], "unexpected": [], "shape": []}
    for key, value in own.items():
        if key not in state:
            (fresh if key.startswith(AUX_PREFIX) else problems["missing"]).append(key)
        elif tuple(state[key].shape) == tuple(value.shape):
            loaded.append(key)
        elif _class_shaped(state[key].shape, value.shape, old_k, new_k):
            fresh.append(key)
        else:
            problems["shape"].append(f"{key} {tuple(state[key].shape)} in the folder, {tuple(value.shape)} here")
    for key in state:
        if key not in own:
            (ignored if key.startswith(AUX_PREFIX) else problems["unexpected"]).append(key)
    return loaded, fresh, ignored, problems


def init_from_folder(model: nn.Module, folder: str) -> InitReport:
    """Load the folder's weights into ``model`` (built with the folder's ``config.json`` keywords,
    any class count); see the module docstring. Returns what was loaded, re-initialised and ignored."""
    folder = os.fspath(folder)
    try:
        config = read_pretrained_config(folder)
        state = load_pretrained_state(folder, config)
    except (OSError, ValueError, ImportError) as exc:
        raise InitError(f"cannot initialise from {folder}: {exc}") from None
    own = model.state_dict()
    new_k = int(getattr(model, "num_classes", (getattr(model, "config", None) or {}).get("num_classes", 0)))
    old_k = int(config["num_classes"])
    loaded, fresh, ignored, problems = split_state(own, state, old_k, new_k)
    bad = {k: v for k, v in problems.items() if v}
    if bad:
        parts = [f"{len(v)} {k} (e.g. {v[0]})" for k, v in bad.items()]
        raise InitError(f"pretrained folder {folder!r} ({config['name']}) does not fit this model: "
                        f"{', '.join(parts)}; build the model with the folder's config.json keywords; from the "
                        f"command line: segattn train --config CFG --init {folder} (config key model.init) "
                        "takes the architecture from the folder")
    model.load_state_dict({k: state[k] for k in loaded}, strict=False)
    return InitReport(folder, str(config["name"]), old_k, new_k, loaded, fresh, ignored)
