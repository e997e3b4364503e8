"""Progress bars for training and prediction, and a quiet mode for scripts.

Training shows Lightning's bar with the epoch, the loss and every metric a task logs with
``prog_bar=True`` (:class:`FlashProgressBar` drops the logger's version number). Long loops
outside Lightning (``task.predict``, plots over the validation set) use :func:`progress`,
which shows a bar only when the loop runs for more than a couple of seconds.

Quiet mode (:func:`set_quiet`, or the environment variable ``FLASH_QUIET=1``) turns these bars
off and silences Lightning's informational messages; :func:`quiet` does so inside a ``with``
block and also hides Lightning's known noisy warnings (:data:`NOISY_WARNINGS`) there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm.auto import tqdm

__all__ = ["NOISY_WARNINGS", "FlashProgressBar", "is_quiet", "progress", "quiet", "set_quiet"]

T = TypeVar("T")

_QUIET: bool | None = None
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")


NOISY_WARNINGS: tuple[str, ...] = (
    r".*does not have many workers",
    r".*is smaller than the logging interval",
    r".*module\(s\) in eval mode at the start of training",
    r".*GPU available but not used",
    r".*across ranks is zero",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    r".*Checkpoint directory .* exists and is not empty",
)
"""Messages of the warnings :func:`quiet` hides: Lightning's advice that does not apply to a
finetuning run on small data (few workers or batches, frozen modules in eval mode, an unused
GPU), and a deprecation inside Lightning itself. Every other warning still shows."""

_saved_levels: dict[str, int] | None = None


def is_quiet() -> bool:
    """Whether progress bars and informational messages are off."""
    if _QUIET is not None:
        return _QUIET
    return os.environ.get("FLASH_QUIET", "").strip().lower() in ("1", "true", "yes", "on")


def set_quiet(value: bool = True) -> None:
    """Turn quiet mode on (no progress bars, no Lightning info messages) or off, for this process.

    Quiet mode raises Lightning's loggers to ``WARNING`` (a level set higher stays);
    ``set_quiet(False)`` puts back the levels they had before quiet mode began.
    """
    global _QUIET, _saved_levels
    if not isinstance(value, bool):
        raise TypeError(f"set_quiet takes True or False, got {value!r}.")
    _QUIET = value
    if value:
        if _saved_levels is None:
            _saved_levels = {name: logging.getLogger(name).level for name in _LIGHTNING_LOGGERS}
        for name in _LIGHTNING_LOGGERS:
            logger = logging.getLogger(name)
            if logger.getEffectiveLevel() < logging.WARNING:
                logger.setLevel(logging.WARNING)
    elif _saved_levels is not None:
        for name, level in _saved_levels.items():
            logging.getLogger(name).setLevel(level)
        _saved_levels = None


@contextlib.contextmanager
def quiet(value: bool = True) -> Iterator[None]:
    """Quiet mode inside a ``with`` block: ``with quiet(): trainer.finetune(...)``.

    Inside the block the :data:`NOISY_WARNINGS` are hidden too; the warning filters, the quiet
    setting and Lightning's logger levels are all put back when the block ends.
    """
    global _QUIET, _saved_levels
    state = (_QUIET, _saved_levels)
    levels = {name: logging.getLogger(name).level for name in _LIGHTNING_LOGGERS}
    set_quiet(bool(value))
    try:
        with warnings.catch_warnings():
            if value:
                for message in NOISY_WARNINGS:
                    warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        _QUIET, _saved_levels = state
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
        return _on_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self) -> Any:
        return _on_stderr(super().init_train_tqdm)

    def init_validation_tqdm(self) -> Any:
        return _on_stderr(super().init_validation_tqdm)

    def init_test_tqdm(self) -> Any:
        return _on_stderr(super().init_test_tqdm)

    def init_predict_tqdm(self) -> Any:
        return _on_stderr(super().init_predict_tqdm)


def _on_stderr(make_bar: Callable[[], Any]) -> Any:
    """A progress bar made while stdout points at stderr (Lightning's bars write to stdout)."""
    with contextlib.redirect_stdout(sys.stderr):
        return make_bar()
