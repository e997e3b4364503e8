"""Progress bars for training and prediction, and a quiet mode for scripts.

Training shows Lightning's bar with the epoch, the loss and every metric a task logs with
``prog_bar=True`` (:class:`FlashProgressBar` drops the logger's version number). Long loops
outside Lightning (``task.predict``, plots over the validation set) use :func:`progress`,
which shows a bar only when the loop runs for more than a couple of seconds.

Quiet mode (:func:`set_quiet`, or the environment variable ``FLASH_QUIET=1``) turns these bars
off and silences Lightning's informational messages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm.auto import tqdm

__all__ = ["FlashProgressBar", "is_quiet", "progress", "quiet", "set_quiet"]

T = TypeVar("T")

_QUIET: bool | None = None
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")


def is_quiet() -> bool:
    """Whether progress bars and informational messages are off."""
    if _QUIET is not None:
        return _QUIET
    return os.environ.get("FLASH_QUIET", "").strip().lower() in ("1", "true", "yes", "on")


def set_quiet(value: bool = True) -> None:
    """Turn quiet mode on (no progress bars, no Lightning info messages) or off, for this process."""
    global _QUIET
    _QUIET = bool(value)
    level = logging.WARNING if value else logging.INFO
    for name in _LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def quiet(value: bool = True) -> Iterator[None]:
    """Quiet mode inside a ``with`` block: ``with quiet(): trainer.finetune(...)``."""
    global _QUIET
    previous = _QUIET
    levels = {name: logging.getLogger(name).level for name in _LIGHTNING_LOGGERS}
    set_quiet(value)
    try:
        with warnings.catch_warnings():
            if value:
                warnings.simplefilter("ignore")
            yield
    finally:
        _QUIET = previous
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


PROGRESS_DELAY_S = 2.0
"""Loops shorter than this show no bar."""


def progress(
    iterable: Iterable[T], *, total: int | None = None, desc: str | None = None, delay: float | None = None
) -> Iterable[T]:
    """``iterable`` with a progress bar (on stderr) that appears once the loop has run ``delay``
    seconds (default :data:`PROGRESS_DELAY_S`).

    Short loops stay silent; in quiet mode there is never a bar.
    """
    if is_quiet():
        return iterable
    if delay is None:
        delay = PROGRESS_DELAY_S
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return tqdm(
        iterable, total=total, desc=desc, delay=delay, leave=False, file=sys.stderr, dynamic_ncols=True
    )


class FlashProgressBar(TQDMProgressBar):
    """Lightning's bar (epoch, batches, loss and logged metrics) on stderr, without the logger's
    version number, so a program's stdout carries only its results."""

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def init_sanity_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_sanity_tqdm()

    def init_train_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()

    def init_test_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_test_tqdm()

    def init_predict_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_predict_tqdm()
