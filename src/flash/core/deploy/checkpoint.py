"""Checkpoints that load safely: plain tensors and containers only (``weights_only=True``)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

import flash

FLASH_CHECKPOINT_KEY = "flash"


def checkpoint_marker(task_class: type) -> dict[str, str]:
    """What a flash checkpoint records about itself."""
    return {"task": f"{task_class.__module__}.{task_class.__qualname__}", "version": flash.__version__}


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file with ``torch.load(weights_only=True)``, with errors that say what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}: the file does not exist.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        raise ValueError(
            f"{path} is not a flash checkpoint (it could not be read safely as a torch checkpoint: "
            f"{str(error).splitlines()[0][:200]})."
        ) from error
    if not isinstance(checkpoint, dict) or FLASH_CHECKPOINT_KEY not in checkpoint:
        raise ValueError(
            f"{path} is a torch file but not a flash checkpoint (written by a flash task's trainer)."
        )
    return checkpoint


def check_flash_checkpoint(path: Any) -> None:
    """Raise a clear error unless ``path`` is a flash checkpoint (file objects are passed through)."""
    if isinstance(path, str | os.PathLike):
        read_checkpoint(path)


def task_class_of(checkpoint: dict[str, Any]) -> str:
    """The dotted name of the task class that wrote ``checkpoint``."""
    return checkpoint[FLASH_CHECKPOINT_KEY]["task"]


def load_task(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Load any flash task from its checkpoint, finding the task class from the checkpoint itself.

    Only trusted modules are imported: flash's own, modules already imported in this process, and
    the packages of registered task families (``flash.domains`` entry points, ``register_domain``).
    """
    import importlib

    dotted = task_class_of(read_checkpoint(path))
    module_name, _, class_name = dotted.rpartition(".")
    if not _trusted_module(module_name):
        raise ValueError(
            f"{path} names task class {dotted!r}, which is not a flash task nor one of a registered task "
            "family; refusing to import it. Import its module first, or register its family "
            "(flash.cli.domains.register_domain or the 'flash.domains' entry-point group)."
        )
    task_class = getattr(importlib.import_module(module_name), class_name)
    return task_class.load_from_checkpoint(path, **kwargs)


def _trusted_module(name: str) -> bool:
    import sys

    if name == "flash" or name.startswith("flash.") or name in sys.modules:
        return True
    from flash.cli.domains import DOMAINS

    packages = {spec.package for spec in DOMAINS.values()}
    return any(name == package or name.startswith(package + ".") for package in packages)
