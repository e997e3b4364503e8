"""Optional dependencies: a missing one says which ``flash-finetune`` extra installs it."""

from __future__ import annotations

import importlib
import re
from types import ModuleType

DISTRIBUTION = "flash-finetune"

EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "multipart"),
    "export": ("onnx", "onnxruntime", "onnxscript"),
    "parquet": ("pyarrow",),
    "ann": ("usearch",),
}
"""The modules each of core's extras in ``pyproject.toml`` provides (import names, not package
names); a task family's extra (its backbones' packages) is named by the family when it calls
:func:`require`."""


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra to install."""


def install_hint(extra: str) -> str:
    """``pip install "flash-finetune[EXTRA]"``."""
    if not isinstance(extra, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", extra):
        raise ValueError(f"{extra!r} is not the name of an extra (lower-case letters, digits, '-', '_').")
    return f'pip install "{DISTRIBUTION}[{extra}]"'


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` saying that ``purpose`` needs it and
    which extra installs it.

    Args:
        module: the import name, e.g. ``"tabm"``.
        extra: the ``flash-finetune`` extra that installs it, e.g. ``"tabular"``.
        purpose: what needs it, as the start of a sentence, e.g. ``"The tabm backbone"``.
    """
    hint = install_hint(extra)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and error.name != module and not module.startswith(error.name + "."):
            raise  # the module is there but something it imports is broken: show that error
        raise MissingExtraError(
            f"{purpose} needs {module}, which is not installed: {hint}", name=module
        ) from None


def require_extra(extra: str, purpose: str) -> None:
    """Check that every module of ``extra`` is installed (see :func:`require`)."""
    if extra not in EXTRAS:
        raise ValueError(f"Unknown extra {extra!r}; the extras are {', '.join(EXTRAS)}.")
    for module in EXTRAS[extra]:
        require(module, extra, purpose)
