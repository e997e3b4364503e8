"""Warnings for Lightning Flash 0.8 (and PyTorch Lightning 1.x) spellings that still work here."""

from __future__ import annotations

import os
import sys
import warnings

_FLASH_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_LIGHTNING_DIRS: tuple[str, ...] = ()


class FlashDeprecationWarning(DeprecationWarning):
    """An old (Lightning Flash 0.8 / PyTorch Lightning 1.x) spelling was used; the message says what to write."""


def warn_deprecated(message: str) -> None:
    """Warn with :class:`FlashDeprecationWarning`, pointing at the first caller outside flash and Lightning
    (so that the warning shows the user's line, and Python's default filters show it in scripts)."""
    warnings.warn(message, FlashDeprecationWarning, stacklevel=_caller_stacklevel())


def _caller_stacklevel() -> int:
    global _LIGHTNING_DIRS
    if not _LIGHTNING_DIRS:
        dirs = []
        for name in ("lightning", "pytorch_lightning"):
            module = sys.modules.get(name)
            if module is not None and getattr(module, "__file__", None):
                dirs.append(os.path.dirname(os.path.abspath(module.__file__)))
        _LIGHTNING_DIRS = tuple(dirs)
    internal = (_FLASH_DIR + os.sep, *(d + os.sep for d in _LIGHTNING_DIRS))
    frame = sys._getframe(1)
    level = 1
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(internal):
            return level
        frame = frame.f_back
        level += 1
    return 2
