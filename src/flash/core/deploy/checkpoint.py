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
    return {"task": _dotted(task_class), "version": flash.__version__}


_TEXT_BYTES = frozenset(b"\t\n\r\f") | frozenset(range(0x20, 0x7F))
_TORCH_PREAMBLE = ("Weights only load failed", "Check the documentation of torch.load")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file with ``torch.load(weights_only=True)``, with errors that say what is wrong.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        ValueError: the file is empty, text, not a torch file, a torch file that is not a flash
            checkpoint, or holds objects other than tensors and plain containers (a pickle that
            would run code is refused, and the refusal is quoted).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}: the file does not exist.")
    with open(path, "rb") as handle:
        head = handle.read(256)
    if not head:
        raise ValueError(f"{path} is empty (0 bytes), not a flash checkpoint: was it written completely?")
    if head[:2] != b"PK" and all(byte in _TEXT_BYTES for byte in head):
        first_line = head.decode("ascii").splitlines()[0][:80] if head.strip() else ""
        raise ValueError(
            f"{path} is a text file (it starts with {first_line!r}), not a flash checkpoint; "
            "pass the .ckpt file a flash Trainer saved."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} was refused: it holds objects other than tensors and plain containers, and flash loads "
            f"checkpoints with weights_only=True so that a file cannot run code. PyTorch said: {_refusal(error)}"
        ) from error
    except Exception as error:  # a foreign or damaged file can fail anywhere inside the unpickler
        reason = str(error).strip() or "the file ends early"
        raise ValueError(
            f"{path} is not a flash checkpoint (it could not be read as a torch checkpoint: "
            f"{type(error).__name__}: {reason})."
        ) from error
    if not isinstance(checkpoint, dict) or FLASH_CHECKPOINT_KEY not in checkpoint:
        raise ValueError(
            f"{path} is a torch file but not a flash checkpoint (written by a flash task's trainer)."
        )
    return checkpoint


def _refusal(error: BaseException) -> str:
    """The unpickler's reason for refusing a file, in full, without torch's advice to load it unsafely."""
    paragraphs = [p.strip() for p in str(error).split("\n\n") if p.strip()]
    reasons = [p for p in paragraphs if not p.startswith(_TORCH_PREAMBLE)]
    return " ".join(reasons or paragraphs) or type(error).__name__


def check_flash_checkpoint(path: Any, task_class: type | None = None) -> None:
    """Raise a clear error unless ``path`` is a flash checkpoint (of ``task_class``, when given).

    File objects are passed through unchecked.
    """
    if isinstance(path, str | os.PathLike):
        checkpoint = read_checkpoint(path)
        if task_class is not None:
            check_task_class(checkpoint, task_class, path)


def check_task_class(checkpoint: dict[str, Any], task_class: type, path: Any = "The checkpoint") -> None:
    """Raise a ``ValueError`` naming the class to use when ``checkpoint`` was written by another task class.

    A checkpoint of ``task_class`` or of a subclass of it passes.
    """
    recorded = task_class_of(checkpoint)
    if recorded == _dotted(task_class):
        return
    module_name, _, class_name = recorded.rpartition(".")
    recorded_class = _trusted_class(module_name, class_name)
    if recorded_class is not None and issubclass(recorded_class, task_class):
        return
    if recorded_class is None and class_name == task_class.__qualname__:
        return  # a class of this name that has moved since: let its weights decide
    if recorded_class is not None:
        hint = (
            f"{_public_name(recorded_class)}.load_from_checkpoint or flash.core.deploy.checkpoint.load_task"
        )
    else:
        hint = f"{recorded}.load_from_checkpoint"
    raise ValueError(
        f"{path} was saved by a {class_name} ({recorded}), not by {task_class.__qualname__}; "
        f"load it with {hint}."
    )


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _trusted_class(module_name: str, class_name: str) -> type | None:
    """The class a checkpoint names, if its module is trusted (see :func:`load_task`)."""
    import importlib

    if not _trusted_module(module_name):
        return None
    try:
        found = getattr(importlib.import_module(module_name), class_name, None)
    except ImportError:
        return None
    return found if isinstance(found, type) else None


def _public_name(cls: type) -> str:
    """The shortest import path of ``cls`` (``flash.text.TextClassifier`` for ``flash.text.model.TextClassifier``)."""
    import importlib

    parts = cls.__module__.split(".")
    for end in range(1, len(parts) + 1):
        module_name = ".".join(parts[:end])
        try:
            if getattr(importlib.import_module(module_name), cls.__name__, None) is cls:
                return f"{module_name}.{cls.__name__}"
        except ImportError:
            continue
    return _dotted(cls)


def task_class_of(checkpoint: dict[str, Any]) -> str:
    """The dotted name of the task class that wrote ``checkpoint``."""
    marker = checkpoint.get(FLASH_CHECKPOINT_KEY)
    dotted = marker.get("task") if isinstance(marker, dict) else None
    if not isinstance(dotted, str) or "." not in dotted:
        raise ValueError(
            f"The checkpoint's {FLASH_CHECKPOINT_KEY!r} entry names no task class ({marker!r:.200}); "
            "it was not written by a flash trainer, or it was edited."
        )
    return dotted


def load_task(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Load any flash task from its checkpoint, finding the task class from the checkpoint itself.

    ``kwargs`` go to the class's ``load_from_checkpoint`` (``device="cpu"``, ``"gpu"`` or
    ``"auto"``, the default: a GPU when there is one).

    Only trusted modules are imported: flash's own, modules already imported in this process, and
    the packages of registered task families (``flash.domains`` entry points, ``register_domain``).
    """
    dotted = task_class_of(read_checkpoint(path))
    module_name, _, class_name = dotted.rpartition(".")
    if not _trusted_module(module_name):
        raise ValueError(
            f"{path} names task class {dotted!r}, which is not a flash task nor one of a registered task "
            "family; refusing to import it. Import its module first, or register its family "
            "(flash.cli.domains.register_domain or the 'flash.domains' entry-point group)."
        )
    task_class = _trusted_class(module_name, class_name)
    if task_class is None:
        raise ValueError(
            f"{path} was saved by {dotted}, which this version of flash ({flash.__version__}) does not have."
        )
    return task_class.load_from_checkpoint(path, **kwargs)


def _trusted_module(name: str) -> bool:
    import sys

    if name == "flash" or name.startswith("flash.") or name in sys.modules:
        return True
    from flash.cli.domains import DOMAINS

    packages = {spec.package for spec in DOMAINS.values()}
    return any(name == package or name.startswith(package + ".") for package in packages)
