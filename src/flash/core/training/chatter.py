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
    r"|Loading `train_dataloader` to estimate number of stepping batches"
    r"|The following callbacks returned in `LightningModule.configure_callbacks` will override existing "
    r"callbacks passed to Trainer: FreedMemoryReuse$)"
)
"""Lightning's informational lines that a flash run drops (adverts and the accelerator census)."""

_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
_CHECKPOINT_LOGGER = "lightning.pytorch.trainer.connectors.checkpoint_connector"


class NoValidationDataWarning(UserWarning):
    """A run has no validation data: its metrics are training metrics only."""


_SCRATCH_CHATTER = re.compile(
    r"\s*(Restoring states from the checkpoint path|Restored all states from the checkpoint"
    r"|`weights_only` was not set|`Trainer.fit` stopped: `max_steps=)"
)
"""What a run the user did not ask for (the learning-rate finder's) says about its own checkpoint."""

_FOLD_CHATTER = re.compile(r"\s*`Trainer.fit` stopped:")
"""Lightning's line at the end of every fit, once per cross-validation fold."""


class _ChatterFilter(logging.Filter):
    def __init__(self, *patterns: re.Pattern[str]) -> None:
        super().__init__()
        self.patterns = patterns

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern.match(message) for pattern in self.patterns)


@contextlib.contextmanager
def lightning_chatter_hidden(scratch: bool = False, fold: bool = False) -> Iterator[None]:
    """Drop Lightning's adverts and accelerator lines from its logs inside the block; with
    ``scratch``, also the lines about the checkpoint a scratch run saves and restores; with
    ``fold``, the end-of-training line of each cross-validation fold (its own summary says it)."""
    extra = [*([_SCRATCH_CHATTER] if scratch else []), *([_FOLD_CHATTER] if fold else [])]
    chatter = _ChatterFilter(_CHATTER, *extra)
    names = (*_RANK_ZERO_LOGGERS, *([_CHECKPOINT_LOGGER] if scratch else []))
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addFilter(chatter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(chatter)


def _ignore_lightning_warnings() -> None:
    """The warnings filters of a flash run (call inside ``warnings.catch_warnings()``)."""
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval")
    for category in (DeprecationWarning, FutureWarning):  # Lightning's own notices about torch
        warnings.filterwarnings("ignore", category=category, module=r"lightning\.")


@contextlib.contextmanager
def scratch_run_hidden() -> Iterator[None]:
    """Everything Lightning says about a run flash makes for itself (the learning-rate finder's
    range test), which has no validation loop and a checkpoint of its own, is hidden."""
    with lightning_chatter_hidden(scratch=True), warnings.catch_warnings():
        _ignore_lightning_warnings()
        warnings.filterwarnings("ignore", message=r".*but have no `val_dataloader`")
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")
        warnings.filterwarnings("ignore", message=r".*`weights_only` was not set")
        yield


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
        _ignore_lightning_warnings()
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
