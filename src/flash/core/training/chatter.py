"""Lightning's messages that say nothing to a flash user, hidden while a ``flash.Trainer`` runs.

Lightning prints adverts ("💡 Tip: ..."), the list of accelerators it found, and warnings about
things flash does on purpose: modules in eval mode at the start of training (the frozen
BatchNorm layers of a finetuning strategy), fewer batches than ``log_every_n_steps`` (flash
logs per epoch), an empty validation loader (a data module without validation data). These
are filtered only while a ``flash.Trainer`` is being built or is running, and only those
messages: everything else Lightning says, and everything outside flash's runs, is untouched.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BaseFinetuning, Callback

_CHATTER = re.compile(
    r"\s*(💡 Tip:"
    r"|GPU available:|TPU available:|HPU available:|IPU available:"
    r"|Loading `train_dataloader` to estimate number of stepping batches)"
)
"""Lightning's informational lines that a flash run drops (adverts and the accelerator census)."""

_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class NoValidationDataWarning(UserWarning):
    """A run has no validation data: its metrics are training metrics only."""


class _ChatterFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _CHATTER.match(record.getMessage())


_FILTER = _ChatterFilter()


@contextlib.contextmanager
def lightning_chatter_hidden() -> Iterator[None]:
    """Drop Lightning's adverts and accelerator lines from its logs inside the block."""
    loggers = [logging.getLogger(name) for name in _RANK_ZERO_LOGGERS]
    added = [logger for logger in loggers if _FILTER not in logger.filters]
    for logger in added:
        logger.addFilter(_FILTER)
    try:
        yield
    finally:
        for logger in added:
            logger.removeFilter(_FILTER)


def _has_validation_data(trainer: pl.Trainer) -> bool | None:
    """``False`` when the run's data is a flash data module without a validation split."""
    from flash.core.data.datamodule import DataModule

    data = trainer.datamodule
    if isinstance(data, DataModule):
        return data.splits.get("val") is not None
    return None


class QuietRun(Callback):
    """Filters Lightning's chatter (see the module's docstring) from ``setup`` to ``teardown``.

    ``flash.Trainer`` adds it; a run with no validation data gets one
    :class:`NoValidationDataWarning` instead of Lightning's "Total length of `list` across ranks
    is zero".
    """

    def __init__(self) -> None:
        self._scope: contextlib.ExitStack | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._close()
        scope = contextlib.ExitStack()
        scope.enter_context(lightning_chatter_hidden())
        scope.enter_context(warnings.catch_warnings())
        if any(isinstance(c, BaseFinetuning) for c in trainer.callbacks):
            # The strategy froze these (BatchNorm of frozen blocks runs in eval mode on purpose).
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")
        warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval")
        for category in (DeprecationWarning, FutureWarning):  # Lightning's own notices about torch
            warnings.filterwarnings("ignore", category=category, module=r"lightning\.")
        if stage == "fit" and _has_validation_data(trainer) is False:
            warnings.filterwarnings("ignore", message=r".*across ranks is zero")
            warnings.warn(
                "No validation data was given, so the run reports training metrics only and keeps the "
                "last epoch. Pass val_split= (a fraction of the training data) or validation data to "
                "the data module.",
                NoValidationDataWarning,
                stacklevel=2,
            )
        self._scope = scope

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: Any) -> None:
        self._close()

    def _close(self) -> None:
        if self._scope is not None:
            scope, self._scope = self._scope, None
            scope.close()
