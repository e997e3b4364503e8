"""``flash.Trainer``: a Lightning Trainer with finetuning defaults and :meth:`Trainer.finetune`."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BaseFinetuning, Callback
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from flash.core.training.auto import AutoResult, auto_options, run_auto
from flash.core.training.calibration import calibrate as calibrate_temperature
from flash.core.training.chatter import QuietRun, lightning_chatter_hidden
from flash.core.training.cross_validation import cross_validate
from flash.core.training.finetuning import FlashBaseFinetuning, resolve_strategy
from flash.core.training.legacy import LegacyTrainerEntryPoints, map_legacy_trainer_arguments
from flash.core.training.lr_finder import find_learning_rate

DEFAULT_MAX_EPOCHS = 10
"""Epochs run by ``flash.Trainer()`` when neither ``max_epochs`` nor ``max_steps`` is given."""


class EpochReseed(Callback):
    """During ``fit`` after :func:`lightning.pytorch.seed_everything`, reseed torch's global generator
    from ``(seed, epoch)`` at the start of every epoch, and put it back as it was when ``fit`` ends.

    Dropout and other random layers draw from torch's global generator; reseeding it per epoch
    makes an epoch's draws independent of what ran before it, so a run resumed from a checkpoint
    continues exactly as the uninterrupted run would. Data randomness does not need it: shuffles
    and image augmentation are keyed on ``(seed, epoch, index)`` by flash's own generators.
    Python's and NumPy's global generators are not touched; torch's (CPU, and CUDA where it was
    initialised before ``fit``) is restored when ``fit`` ends or fails.
    """

    def __init__(self) -> None:
        self._saved: tuple[torch.Tensor, list[torch.Tensor] | None] | None = None

    @staticmethod
    def _seed() -> int | None:
        seed = os.environ.get("PL_GLOBAL_SEED")
        try:
            return int(seed) if seed is not None else None
        except ValueError:
            return None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._seed() is None or self._saved is not None:
            return
        cuda = (
            torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else None
        )
        self._saved = (torch.get_rng_state(), cuda)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed = self._seed()
        if seed is None:
            return
        torch.manual_seed((seed * 1_000_003 + trainer.current_epoch) % (2**32))

    def _restore(self) -> None:
        if self._saved is None:
            return
        cpu, cuda = self._saved
        self._saved = None
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()


class MetricsHistory(Callback):
    """Keeps the epoch-level metrics of the run in ``trainer.history`` (a list of dicts)."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row: dict[str, float] = {"epoch": float(trainer.current_epoch)}
        for key, value in trainer.callback_metrics.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                row[key] = float(value)
        self.history = [r for r in self.history if r["epoch"] != row["epoch"]] + [row]

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))


class Trainer(LegacyTrainerEntryPoints, pl.Trainer):
    """A :class:`lightning.pytorch.Trainer` with finetuning defaults.

    Differences from Lightning's: ``max_epochs`` defaults to :data:`DEFAULT_MAX_EPOCHS` (10, not
    1000); metrics are logged to CSV under ``default_root_dir`` and kept in :attr:`history`; on a
    CUDA GPU that supports it, ``precision`` defaults to ``"bf16-mixed"``; after ``seed_everything``,
    torch's generator is reseeded every epoch so resumed runs are exact, and restored when ``fit``
    ends (:class:`EpochReseed`). ``fit``, ``validate``, ``test`` and ``predict`` are Lightning's own:
    flash data modules take the task's preprocessing in their ``setup`` hook, so a plain
    ``lightning.Trainer`` trains the same way.

    PyTorch Lightning 1.x arguments (``gpus=``, ``tpu_cores=``, ``fit(train_dataloader=...)``, ...)
    and Lightning Flash's ``predict(..., output=...)`` are accepted too; see
    :mod:`flash.core.training.legacy`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs = self._pop_resume_from_checkpoint(map_legacy_trainer_arguments(kwargs))
        self._given_arguments = (args, dict(kwargs))
        self.auto_result: AutoResult | None = None
        """The leaderboard of the last ``finetune(..., strategy="auto")``."""
        if (
            kwargs.get("max_epochs") is None
            and kwargs.get("max_steps", -1) == -1
            and kwargs.get("max_time") is None
        ):
            kwargs["max_epochs"] = DEFAULT_MAX_EPOCHS
        if "logger" not in kwargs or kwargs["logger"] is True:
            kwargs["logger"] = CSVLogger(kwargs.get("default_root_dir") or os.getcwd(), name="lightning_logs")
        if "precision" not in kwargs and _cuda_bf16(kwargs.get("accelerator", "auto")):
            kwargs["precision"] = "bf16-mixed"
        callbacks = kwargs.get("callbacks") or []
        callbacks = [callbacks] if isinstance(callbacks, Callback) else list(callbacks)
        self._history = MetricsHistory()
        kwargs["callbacks"] = [*callbacks, EpochReseed(), self._history, *_quiet_defaults(kwargs, callbacks)]
        with lightning_chatter_hidden():
            super().__init__(*args, **kwargs)

    @property
    def history(self) -> list[dict[str, float]]:
        """Metrics of every finished epoch: ``[{"epoch": 0, "train_loss": ..., "val_accuracy": ...}, ...]``."""
        return list(self._history.history)

    def finetune(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule | DataLoader | None = None,
        strategy: Any = "no_freeze",
        train_bn: bool | None = None,
        ckpt_path: str | None = None,
        *,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
    ) -> AutoResult | None:
        """Finetune ``model`` on ``datamodule`` with a finetuning ``strategy``.

        Args:
            model: the task.
            datamodule: a data module (or a training DataLoader).
            strategy: ``"no_freeze"``, ``"freeze"``, ``"freeze_unfreeze"``, ``"unfreeze_milestones"``,
                a ``(name, argument)`` tuple, or a ``BaseFinetuning`` callback; see
                :mod:`flash.core.training.finetuning`. ``"auto"`` (or ``("auto", {options})``)
                chooses the strategy and learning rate by cross-validation first
                (:func:`flash.core.training.auto.run_auto`), returns its leaderboard
                (:class:`~flash.core.training.auto.AutoResult`) and keeps it in ``auto_result``.
            train_bn: keep BatchNorm layers of frozen parts training; ``None``: the task's
                ``default_train_bn`` (``True`` for tasks without one; image tasks keep them frozen).
                Under ``no_freeze``: whether BatchNorm layers train with the rest; ``None``: the
                task's ``no_freeze_train_bn`` (``True`` for tasks without one).
            ckpt_path: resume from this checkpoint.

        Raises:
            ValueError, TypeError, AttributeError: for a bad strategy, before any training step.
        """
        if not isinstance(model, pl.LightningModule):
            raise TypeError(f"finetune needs a LightningModule (a flash task), got {type(model).__name__}.")
        if strategy == "auto" or (isinstance(strategy, tuple) and strategy[:1] == ("auto",)):
            if len(strategy) > 2 and isinstance(strategy, tuple):
                raise ValueError('strategy="auto" takes one argument: ("auto", {"time_limit": 600, ...}).')
            options = auto_options(
                strategy[1] if isinstance(strategy, tuple) and len(strategy) == 2 else None
            )
            if ckpt_path is not None or train_dataloaders is not None or val_dataloaders is not None:
                raise ValueError('strategy="auto" takes a data module, and cannot resume from a checkpoint.')
            self.auto_result = run_auto(self, model, datamodule, train_bn=train_bn, **options)
            return self.auto_result
        callback = resolve_strategy(strategy, train_bn=train_bn)
        if isinstance(callback, FlashBaseFinetuning):
            callback.validate(model, self.max_epochs)
        if isinstance(datamodule, DataLoader):
            train_dataloaders, datamodule = datamodule, None
        if datamodule is None and train_dataloaders is None:
            raise ValueError("finetune needs data: pass a data module (or train_dataloaders=...).")
        self._install_finetuning(callback)
        self.fit(
            model,
            train_dataloaders=train_dataloaders,
            val_dataloaders=val_dataloaders,
            datamodule=datamodule,
            ckpt_path=ckpt_path,
        )

    def fit(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's ``fit``; the Ctrl-C handler is as before it afterwards (:func:`sigint_kept`)."""
        with sigint_kept():
            return super().fit(*args, **kwargs)

    def validate(self, *args: Any, **kwargs: Any) -> Any:
        """Lightning's ``validate``; the Ctrl-C handler is as before it afterwards."""
        with sigint_kept():
            return super().validate(*args, **kwargs)

    def test(self, *args: Any, **kwargs: Any) -> Any:
        """Lightning's ``test``; the Ctrl-C handler is as before it afterwards."""
        with sigint_kept():
            return super().test(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        """Lightning's ``predict`` (with Lightning Flash's ``output=``); the Ctrl-C handler is as before."""
        with sigint_kept():
            return super().predict(*args, **kwargs)

    lr_find = find_learning_rate
    cross_validate = cross_validate
    calibrate = calibrate_temperature

    def fold_trainer(self, directory: str | os.PathLike) -> Trainer:
        """A fresh trainer with this one's settings for one run of a search or cross-validation
        (:meth:`cross_validate`): its logs go to ``directory``, user callbacks are copies, and it
        saves no checkpoints (checkpoint callbacks are left out)."""
        args, kwargs = self._given_arguments
        kwargs = dict(kwargs)
        callbacks = kwargs.get("callbacks") or []
        callbacks = [callbacks] if isinstance(callbacks, Callback) else list(callbacks)
        kwargs["callbacks"] = [
            copy.deepcopy(c) for c in callbacks if not isinstance(c, pl.callbacks.Checkpoint)
        ]
        kwargs["default_root_dir"] = str(directory)
        kwargs["enable_checkpointing"] = False
        if kwargs.get("logger", True) not in (False, None):
            kwargs["logger"] = CSVLogger(str(directory), name="lightning_logs")
        return type(self)(*args, **kwargs)

    def _install_finetuning(self, callback: BaseFinetuning) -> None:
        kept = [c for c in self.callbacks if not isinstance(c, BaseFinetuning)]
        checkpoints = [c for c in kept if isinstance(c, pl.callbacks.Checkpoint)]
        others = [c for c in kept if not isinstance(c, pl.callbacks.Checkpoint)]
        self.callbacks = [*others, callback, *checkpoints]


@contextlib.contextmanager
def sigint_kept() -> Iterator[None]:
    """Put the process's Ctrl-C (SIGINT) handler back after the block.

    On Ctrl-C, Lightning makes the process ignore SIGINT while it shuts the run down, then puts
    back the handlers its signal connector recorded when the run was set up; a Ctrl-C before that
    set-up leaves SIGINT ignored. An ignored SIGINT would make the user's next Ctrl-C do nothing,
    and every subprocess started later would inherit it (Python then never raises
    KeyboardInterrupt there). flash puts back the handler from before the call in every case.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if handler is not None and signal.getsignal(signal.SIGINT) != handler:
            signal.signal(signal.SIGINT, handler)


def _quiet_defaults(kwargs: dict[str, Any], callbacks: list[Callback]) -> list[Callback]:
    """Callbacks and defaults that keep a run's output to what its user needs.

    No model summary unless asked for (``enable_model_summary=True``); the progress bar without
    the logger's version number; the checkpoint callback Lightning would add, added here so
    Lightning does not advertise its cloud registry; Lightning's chatter filtered (:class:`QuietRun`).
    """
    from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar

    from flash.core.utils.progress import FlashProgressBar

    kwargs.setdefault("enable_model_summary", False)
    added: list[Callback] = [QuietRun()]
    if kwargs.get("enable_progress_bar", True) and not any(isinstance(c, ProgressBar) for c in callbacks):
        added.append(FlashProgressBar())
    if kwargs.get("enable_checkpointing", True) and not any(
        isinstance(c, pl.callbacks.Checkpoint) for c in callbacks
    ):
        added.append(ModelCheckpoint())
    return added


def _cuda_bf16(accelerator: Any) -> bool:
    if accelerator not in ("auto", "gpu", "cuda") or not torch.cuda.is_available():
        return False
    return bool(torch.cuda.is_bf16_supported())
