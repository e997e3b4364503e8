"""flash: finetune pretrained models on small data sets, on PyTorch Lightning."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("flash-finetune")  # pyproject.toml is the one place the version is written
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from flash.core.data.datamodule import DataModule
    from flash.core.model.task import Task
    from flash.core.training.trainer import Trainer

_LAZY = {
    "Trainer": "flash.core.training.trainer",
    "Task": "flash.core.model.task",
    "DataModule": "flash.core.data.datamodule",
}


def __getattr__(name: str) -> Any:
    """``flash.Trainer``, ``flash.Task``, ``flash.DataModule`` (and ``flash.core``) import torch and
    Lightning on first use, so that ``import flash`` and the ``flash`` command's help, ``--version``
    and argument errors stay quick."""
    if name in _LAZY or name == "core":
        for public, module in _LAZY.items():
            globals()[public] = getattr(importlib.import_module(module), public)
        return globals()[name] if name in _LAZY else importlib.import_module("flash.core")
    raise AttributeError(f"module 'flash' has no attribute {name!r}")


def download_data(url: str, path: str = "data/", **kwargs):
    """Download ``url`` (http, https or file) into ``path`` and extract archives; see :mod:`flash.core.data.download`."""
    from flash.core.data.download import download_data as _download_data

    return _download_data(url, path, **kwargs)


__all__ = ["DataModule", "Task", "Trainer", "__version__", "download_data"]
