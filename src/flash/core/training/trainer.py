"""``flash.Trainer``: a Lightning Trainer with finetuning defaults and :meth:`Trainer.finetune`."""

from __future__ import annotations

import os
import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BaseFinetuning, Callback
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from flash.core.training.finetuning import FlashBaseFinetuning, resolve_strategy
from flash.core.training.legacy import LegacyTrainerEntryPoints, map_legacy_trainer_arguments

DEFAULT_MAX_EPOCHS = 10
"""Epochs run by ``flash.Trainer()`` when neither ``max_epochs`` nor ``max_steps`` is given."""


class EpochReseed(Callback):
    """Reseed Python, NumPy and torch from ``(seed, epoch)`` at the start of every epoch.

    Active after :func:`lightning.pytorch.seed_everything`. It makes dropout and augmentation of
    an epoch independent of what ran before it, so a run resumed from a checkpoint continues
    exactly as the uninterrupted run would.
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed = os.environ.get("PL_GLOBAL_SEED")
        if seed is None:
            return
        epoch_seed = (int(seed) * 1_000_003 + trainer.current_epoch) % (2**32)
        random.seed(epoch_seed)
        np.random.seed(epoch_seed)
        torch.manual_seed(epoch_seed)


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
    CUDA GPU that supports it, ``precision`` defaults to ``"bf16-mixed"``; every epoch is reseeded
    after ``seed_everything`` so resumed runs are exact. ``fit``, ``validate``, ``test`` and
    ``predict`` are Lightning's, and hand flash data modules the task's preprocessing first.

    PyTorch Lightning 1.x arguments (``gpus=``, ``tpu_cores=``, ``fit(train_dataloader=...)``, ...)
    and Lightning Flash's ``predict(..., output=...)`` are accepted too; see
    :mod:`flash.core.training.legacy`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs = self._pop_resume_from_checkpoint(map_legacy_trainer_arguments(kwargs))
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
        kwargs["callbacks"] = [*callbacks, EpochReseed(), self._history]
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
    ) -> None:
        """Finetune ``model`` on ``datamodule`` with a finetuning ``strategy``.

        Args:
            model: the task.
            datamodule: a data module (or a training DataLoader).
            strategy: ``"no_freeze"``, ``"freeze"``, ``"freeze_unfreeze"``, ``"unfreeze_milestones"``,
                a ``(name, argument)`` tuple, or a ``BaseFinetuning`` callback; see
                :mod:`flash.core.training.finetuning`.
            train_bn: keep BatchNorm layers of frozen parts training; ``None``: the task's
                ``default_train_bn`` (``True`` for tasks without one; image tasks keep them frozen).
            ckpt_path: resume from this checkpoint.

        Raises:
            ValueError, TypeError, AttributeError: for a bad strategy, before any training step.
        """
        if not isinstance(model, pl.LightningModule):
            raise TypeError(f"finetune needs a LightningModule (a flash task), got {type(model).__name__}.")
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

    def lr_find(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule | DataLoader,
        *,
        strategy: Any = None,
        train_bn: bool | None = None,
        min_lr: float = 1e-7,
        max_lr: float = 1.0,
        num_training: int = 100,
        early_stop_threshold: float | None = 4.0,
        plot_path: str | os.PathLike | None = None,
        update_attr: bool = False,
    ) -> Any:
        """Find a learning rate with the range test (Lightning's tuner); the task is left unchanged.

        ``suggestion, plot = trainer.lr_find(task, data, update_attr=True)`` also sets the task's
        learning rate to the suggestion.

        Args:
            model: the task.
            datamodule: its data module (or a training DataLoader); only training batches are used.
            strategy: a finetuning strategy whose frozen parts stay frozen during the test, so the
                rate suits the first epochs of ``finetune(..., strategy=...)``.
            min_lr, max_lr: the range of rates, swept exponentially.
            num_training: steps of the sweep (it runs as many epochs as needed).
            early_stop_threshold: stop once the loss exceeds this multiple of the best loss.
            plot_path: write the loss-against-rate plot there (PNG); otherwise the result holds
                the matplotlib figure.
            update_attr: set ``model.learning_rate`` (and its saved hyperparameter) to the suggestion.

        Returns:
            :class:`flash.core.training.lr_finder.LRFinderResult` (``suggestion``, ``lrs``, ``losses``, ``plot``).
            The task's weights, BatchNorm statistics, trainable parameters and the random state
            are restored afterwards.
        """
        from flash.core.training.lr_finder import find_learning_rate

        return find_learning_rate(
            self,
            model,
            datamodule,
            strategy=strategy,
            train_bn=train_bn,
            min_lr=min_lr,
            max_lr=max_lr,
            num_training=num_training,
            early_stop_threshold=early_stop_threshold,
            plot_path=plot_path,
            update_attr=update_attr,
        )

    def _install_finetuning(self, callback: BaseFinetuning) -> None:
        kept = [c for c in self.callbacks if not isinstance(c, BaseFinetuning)]
        checkpoints = [c for c in kept if isinstance(c, pl.callbacks.Checkpoint)]
        others = [c for c in kept if not isinstance(c, pl.callbacks.Checkpoint)]
        self.callbacks = [*others, callback, *checkpoints]

    # -- Lightning entry points, with the task handed to flash data modules -------------------
    def fit(
        self, model: pl.LightningModule, train_dataloaders: Any = None, *args: Any, **kwargs: Any
    ) -> None:
        self._attach(model, train_dataloaders, kwargs.get("datamodule"))
        return super().fit(model, train_dataloaders, *args, **kwargs)

    def validate(
        self, model: pl.LightningModule | None = None, dataloaders: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        self._attach(model, dataloaders, kwargs.get("datamodule"))
        return super().validate(model, dataloaders, *args, **kwargs)

    def test(
        self, model: pl.LightningModule | None = None, dataloaders: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        self._attach(model, dataloaders, kwargs.get("datamodule"))
        return super().test(model, dataloaders, *args, **kwargs)

    def predict(
        self, model: pl.LightningModule | None = None, dataloaders: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        self._attach(model, dataloaders, kwargs.get("datamodule"))
        return super().predict(model, dataloaders, *args, **kwargs)

    @staticmethod
    def _attach(model: Any, *candidates: Any) -> None:
        from flash.core.data.datamodule import DataModule

        if model is None:
            return
        for data in candidates:
            if isinstance(data, DataModule):
                data.attach_task(model)


def _cuda_bf16(accelerator: Any) -> bool:
    if accelerator not in ("auto", "gpu", "cuda") or not torch.cuda.is_available():
        return False
    return bool(torch.cuda.is_bf16_supported())
