"""Hugging Face Hub repo ids: a ``user/repo`` source downloaded to a local folder, and ``push_to_hub``.

Only used when such an id is passed; needs ``huggingface_hub`` (the ``[hub]`` extra).
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Optional, Union

from torch import nn

from segattn.models.folder import (
    CARD_FILE,
    CONFIG_FILE,
    SAFETENSORS_FILE,
    TORCH_FILE,
    TRAINING_CONFIG_FILE,
    save_pretrained,
)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_pretrained(source: Union[str, os.PathLike[str]], revision: Optional[str] = None,
                       cache_dir: Optional[str] = None, token: Optional[str] = None) -> str:
    """A local folder for ``source``: the folder itself, or a Hub repo id (``user/repo``) downloaded
    through ``huggingface_hub.snapshot_download`` (only when such an id is passed; needs ``[hub]``)."""
    path = os.fspath(source)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise NotADirectoryError(f"{path!r} is a file; from_pretrained takes a save_pretrained folder or a Hub repo id")
    if not _REPO_ID.match(path) or path.startswith((".", "/")):
        raise FileNotFoundError(f"no model folder {path!r} (written by save_pretrained) and not a Hub repo id 'user/repo'")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise ImportError(f"{path!r} is not a local folder; loading it from the Hugging Face Hub needs "
                          "huggingface_hub (pip install 'segattn[hub]')") from err
    return snapshot_download(repo_id=path, revision=revision, cache_dir=cache_dir, token=token,
                             allow_patterns=[CONFIG_FILE, SAFETENSORS_FILE, TORCH_FILE, CARD_FILE, TRAINING_CONFIG_FILE])


_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar")


def is_pretrained_source(source: Union[str, os.PathLike[str]]) -> bool:
    """True for a folder, or for a ``user/repo`` Hub id that is not a local path (a checkpoint file,
    or a missing path that looks like one, is not)."""
    path = os.fspath(source)
    if os.path.isdir(path):
        return True
    return (not os.path.exists(path) and bool(_REPO_ID.match(path)) and not path.startswith((".", "/"))
            and not path.lower().endswith(_WEIGHT_SUFFIXES))


def push_to_hub(model: nn.Module, repo_id: str, *, private: Optional[bool] = None, token: Optional[str] = None,
                commit_message: str = "Upload segattn model", revision: Optional[str] = None,
                **save_kw: Any) -> Any:
    """:func:`save_pretrained` into a temporary folder, then ``create_repo`` + ``upload_folder`` through
    ``huggingface_hub`` (the ``[hub]`` extra); returns the commit info of the upload."""
    try:
        from huggingface_hub import HfApi
    except ImportError as err:
        raise ImportError("push_to_hub needs huggingface_hub (pip install 'segattn[hub]')") from err
    if not _REPO_ID.match(repo_id):
        raise ValueError(f"repo_id must look like 'user/name', got {repo_id!r}")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="segattn-push-") as tmp:
        folder = save_pretrained(model, os.path.join(tmp, "model"), **save_kw)
        api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
        return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                 revision=revision, repo_type="model")
