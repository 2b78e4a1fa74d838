"""``create_model`` / ``list_models``: the registered models by name (``build_segmentor`` lives in ``builder``)."""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any, Dict, List

from torch import nn

import segattn.models.zoo  # noqa: F401  (registers the models)
from segattn.checks import checked
from segattn.errors import ArgumentError
from segattn.models.builder import HeadFactory, build_segmentor  # noqa: F401  (re-exported)
from segattn.models.segmentor import SegmentationModel
from segattn.models.transfer import init_from_folder
from segattn.registry import MODELS, unknown_keywords


@checked()
def list_models(pattern: str = "*") -> List[str]:
    """Registered model names matching the shell-style ``pattern``."""
    return MODELS.list(pattern)


def model_keywords(name: str) -> List[str]:
    """The keywords ``create_model(name, ...)`` accepts: the model's own (``dropout``, ``context``, ...)
    and those every model passes on to :func:`build_segmentor` (``backbone``, ``channels``, ...)."""
    own = [p.name for p in inspect.signature(MODELS.get(name)).parameters.values()
           if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "num_classes"]
    shared = [p.name for p in inspect.signature(build_segmentor).parameters.values()
              if p.kind is p.KEYWORD_ONLY]
    return sorted(set(own) | set(shared))


def check_model_keywords(name: str, kwargs: Dict[str, Any]) -> None:
    """:class:`~segattn.errors.ArgumentError` naming the keywords of ``kwargs`` that model ``name``
    does not take, with the accepted ones (and a close match for a typo)."""
    accepted = model_keywords(name)
    unknown = unknown_keywords(kwargs, accepted)
    if unknown:
        raise ArgumentError(f"create_model: model {name!r} takes no keyword argument(s) {unknown}; "
                            f"accepted: {', '.join(accepted)}")


@checked()
def create_model(name: str, num_classes: int, **kwargs: Any) -> SegmentationModel:
    """Build model ``name`` (see :func:`list_models`) for ``num_classes`` classes.

    Common keywords: ``backbone="resnet50"`` (``resnet18/34/50/101/152`` plain, ``...c`` V1c deep stem,
    ``...d`` V1d, ``hrnet_w18`` / ``hrnet_w48`` / ``hrnet_w18_small``, or ``"timm:<name>"``), ``output_stride=8``
    (not for HRNet), ``pretrained=None`` (backbone weights:
    a path or URL, never fetched implicitly; a ``save_pretrained`` folder initialises the whole model,
    see :func:`load_whole_model`), ``aux=True``, ``aux_weight=0.4``, ``channels=512``
    (head width), ``multi_grid``, ``in_chans``, ``align_corners``, ``dropout``, ``context_kw``
    (keywords for the context module(s)). ``model.config`` records the call for
    ``save_pretrained`` / ``from_pretrained``.
    """
    check_model_keywords(name, kwargs)
    folder = kwargs.get("pretrained")
    whole = isinstance(folder, (str, os.PathLike)) and os.path.isdir(folder)
    build_kw = {k: v for k, v in kwargs.items() if not (whole and k == "pretrained")}
    model = MODELS.create(name, num_classes, **build_kw)
    model.config = {"name": name.lower(), "num_classes": num_classes, **build_kw}
    if whole:
        load_whole_model(model, os.fspath(folder))
    return model


def load_whole_model(model: nn.Module, folder: str) -> None:
    """Initialise every layer from a ``save_pretrained`` folder (a converted mmseg model, a trained one):
    ``pretrained=FOLDER`` in :func:`create_model`. Tensors shaped by the class count keep their fresh
    initialisation when the count differs; any other difference is an
    :class:`~segattn.models.transfer.InitError` (a ``ValueError``) naming the keys
    (:func:`segattn.models.transfer.init_from_folder`)."""
    report = init_from_folder(model, folder)
    if report.reinitialised or report.ignored:
        print(report.table(), file=sys.stderr)
