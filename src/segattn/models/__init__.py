"""Segmentation models (placeholder until the models issue lands)."""

from typing import Any, List

from segattn.registry import MODELS


def list_models(pattern: str = "*") -> List[str]:
    return MODELS.list(pattern)


def create_model(name: str, num_classes: int, **kwargs: Any) -> Any:
    return MODELS.create(name, num_classes=num_classes, **kwargs)


def from_pretrained(path: str) -> Any:
    raise NotImplementedError("from_pretrained arrives with the models issue")
