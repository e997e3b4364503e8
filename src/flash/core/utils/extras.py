"""Optional dependencies: a missing one says which ``flash-finetune`` extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

DISTRIBUTION = "flash-finetune"

EXTRAS: dict[str, tuple[str, ...]] = {
    "tabular": ("tabm", "rtdl_num_embeddings"),
    "serve": ("fastapi", "uvicorn", "multipart"),
    "export": ("onnx", "onnxruntime", "onnxscript"),
    "parquet": ("pyarrow",),
}
"""The modules each extra of ``pyproject.toml`` provides (import names, not package names)."""


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra to install."""


def install_hint(extra: str) -> str:
    """``pip install "flash-finetune[EXTRA]"``."""
    if extra not in EXTRAS:
        raise ValueError(f"Unknown extra {extra!r}; the extras are {', '.join(EXTRAS)}.")
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
    install_hint(extra)  # an unknown extra is an error
    for module in EXTRAS[extra]:
        require(module, extra, purpose)
