"""The learning-rate range test (fastai's ``lr_find``) on Lightning's tuner, with no side effects.

The test trains the task for a few steps while the learning rate grows exponentially from
``min_lr`` to ``max_lr`` and records the (smoothed) loss at each step; the suggested rate is
where the loss falls fastest. Afterwards the task is exactly as before: weights, BatchNorm
statistics, which parameters train, train/eval mode and the random number generators.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.tuner import Tuner
from torch.utils.data import DataLoader

from flash.core.training.chatter import scratch_run_hidden
from flash.core.utils.rng import rng_state, set_rng_state
from flash.core.utils.validation import check_int

__all__ = ["LRFinderResult", "apply_learning_rate", "find_learning_rate", "smooth", "suggest_learning_rate"]


@dataclass
class LRFinderResult:
    """What the range test found.

    Unpacks as ``suggestion, plot = trainer.lr_find(task, data)``.

    Attributes:
        suggestion: the suggested learning rate (steepest fall of the loss), or ``None`` when
            the test ran too few steps to suggest one.
        lrs: the learning rate of every step.
        losses: the smoothed training loss of every step (see :func:`smooth`).
        raw_losses: the training loss of every step as measured.
        plot: the plot's path when one was asked for, else a matplotlib ``Figure``.
    """

    suggestion: float | None
    lrs: list[float] = field(repr=False)
    losses: list[float] = field(repr=False)
    plot: Path | Any = field(default=None, repr=False)
    raw_losses: list[float] = field(default_factory=list, repr=False)

    def __iter__(self) -> Iterator[Any]:
        yield self.suggestion
        yield self.plot


def find_learning_rate(
    trainer: pl.Trainer,
    model: pl.LightningModule,
    datamodule: Any,
    *,
    strategy: Any = None,
    train_bn: bool | None = None,
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    num_training: int = 100,
    early_stop_threshold: float | None = 4.0,
    plot_path: str | os.PathLike | None = None,
    update_attr: bool = False,
) -> LRFinderResult:
    """Find a learning rate with the range test (Lightning's tuner); the task is left unchanged.

    ``suggestion, plot = trainer.lr_find(task, data, update_attr=True)`` also sets the task's
    learning rate to the suggestion.

    This is :meth:`flash.Trainer.lr_find` (``trainer`` is the trainer it is called on, whose
    accelerator and precision the test uses).

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
    task, data = model, datamodule
    _check_arguments(task, min_lr, max_lr, num_training, early_stop_threshold)
    train_loader = _train_loader(task, data)
    snapshot = _TaskSnapshot(task)
    saved_rng = rng_state()
    try:
        with tempfile.TemporaryDirectory(prefix="flash_lr_find_") as scratch_dir, scratch_run_hidden():
            scratch = _scratch_trainer(trainer, scratch_dir, strategy, train_bn, task)
            with (
                _finder_bar(enabled=scratch.progress_bar_callback is not None),
                _LossRecorder(task) as recorder,
            ):
                finder = Tuner(scratch).lr_find(
                    task,
                    train_dataloaders=train_loader,
                    min_lr=min_lr,
                    max_lr=max_lr,
                    num_training=num_training,
                    early_stop_threshold=early_stop_threshold,
                    update_attr=False,
                )
    finally:
        snapshot.restore()
        set_rng_state(saved_rng)
    if finder is None:
        raise RuntimeError("The learning-rate finder did not run (is fast_dev_run set on the trainer?).")
    lrs = [float(x) for x in finder.results.get("lr", [])]
    raw = recorder.losses[: len(lrs)]
    lrs = lrs[: len(raw)]
    losses = smooth(raw)
    suggestion = suggest_learning_rate(lrs, losses)
    from flash.core.utils.plots import plot_lr_finder

    plot = plot_lr_finder(lrs, losses, suggestion, path=plot_path)
    if update_attr and suggestion is not None:
        apply_learning_rate(task, suggestion)
    return LRFinderResult(suggestion, lrs, losses, plot, raw_losses=raw)


def apply_learning_rate(task: Any, learning_rate: float) -> None:
    """Give ``task`` a new head learning rate, also in the hyperparameters its checkpoints keep."""
    if not isinstance(learning_rate, int | float) or not math.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}.")
    task.learning_rate = float(learning_rate)
    if "learning_rate" in task.hparams:
        task.hparams["learning_rate"] = float(learning_rate)


def smooth(losses: list[float], beta: float | None = None) -> list[float]:
    """Exponential moving average with bias correction (fastai's smoothing of the range test).

    ``beta`` defaults to 0.98 for long tests and less for short ones (``1 - 5 / steps``), so a
    short test's curve does not lag many steps behind the rate. Non-finite losses stay as they are.
    """
    if beta is None:
        beta = min(0.98, max(0.0, 1.0 - 5.0 / max(1, len(losses))))
    average, smoothed, count = 0.0, [], 0
    for loss in losses:
        if not math.isfinite(loss):
            smoothed.append(loss)
            continue
        count += 1
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta**count) if beta > 0 else loss)
    return smoothed


class _LossRecorder:
    """Records the raw training loss of every step through the task's ``on_train_batch_end`` hook.

    Lightning's range test keeps only its own smoothed losses, whose bias correction is off by one
    step (the first value is about half the real loss), and it runs no other callbacks; the task's
    own hooks still run, so the raw losses are taken there.
    """

    def __init__(self, task: pl.LightningModule) -> None:
        self.task = task
        self.losses: list[float] = []

    def __enter__(self) -> _LossRecorder:
        original = self.task.on_train_batch_end

        def record(outputs: Any, batch: Any, batch_idx: int) -> Any:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            self.losses.append(float(loss.detach()) if isinstance(loss, torch.Tensor) else float("nan"))
            return original(outputs, batch, batch_idx)

        object.__setattr__(self.task, "on_train_batch_end", record)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.task.__dict__.pop("on_train_batch_end", None)


def _check_arguments(
    task: Any, min_lr: float, max_lr: float, num_training: int, early_stop_threshold: float | None
) -> None:
    if not isinstance(task, pl.LightningModule):
        raise TypeError(f"lr_find needs a LightningModule (a flash task), got {type(task).__name__}.")
    for name, value in (("min_lr", min_lr), ("max_lr", max_lr)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"{name} must be a positive number, got {value!r}.")
    if min_lr >= max_lr:
        raise ValueError(f"min_lr ({min_lr}) must be smaller than max_lr ({max_lr}).")
    check_int(num_training, "num_training", 2, "steps")
    if early_stop_threshold is not None and (
        not isinstance(early_stop_threshold, int | float) or early_stop_threshold <= 1
    ):
        raise ValueError(
            f"early_stop_threshold must be a number > 1 (or None to never stop early), got {early_stop_threshold!r}."
        )


def _train_loader(task: pl.LightningModule, data: Any) -> DataLoader:
    """The training loader only: the range test needs no validation."""
    from flash.core.data.datamodule import DataModule

    if isinstance(data, DataLoader):
        return data
    if isinstance(data, DataModule):
        data.attach_task(task)
        if data.splits.get("train") is None:
            raise ValueError("lr_find needs training data: the data module has no train split.")
        return data.train_dataloader()
    if isinstance(data, pl.LightningDataModule):
        data.setup("fit")
        return data.train_dataloader()
    raise TypeError(f"lr_find needs a data module or a training DataLoader, got {type(data).__name__}.")


def _scratch_trainer(
    trainer: pl.Trainer, root: str, strategy: Any, train_bn: bool | None, task: pl.LightningModule
) -> pl.Trainer:
    """A one-device trainer like ``trainer`` that writes nothing the user keeps and logs nothing."""
    from flash.core.training.finetuning import FlashBaseFinetuning, resolve_strategy
    from flash.core.utils.progress import is_quiet

    callbacks = []
    if strategy is not None:
        callback = resolve_strategy(strategy, train_bn=train_bn)
        if isinstance(callback, FlashBaseFinetuning):
            callback.validate(task, max(1, trainer.max_epochs or 1))
        callbacks.append(callback)
    return pl.Trainer(
        accelerator=trainer.accelerator,
        devices=1,
        precision=trainer.precision,
        max_epochs=-1,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=trainer.progress_bar_callback is not None and not is_quiet(),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )


@contextlib.contextmanager
def _finder_bar(enabled: bool) -> Iterator[None]:
    """Lightning's range test always draws its own bar; silence it when the trainer shows none."""
    import lightning.pytorch.tuner.lr_finder as lightning_lr_finder

    if enabled:
        yield
        return
    original = lightning_lr_finder.tqdm
    lightning_lr_finder.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        lightning_lr_finder.tqdm = original


def suggest_learning_rate(
    lrs: list[float], losses: list[float], skip_begin: int | None = None
) -> float | None:
    """The rate where the smoothed loss falls fastest per decade of learning rate.

    The first ``skip_begin`` steps (default a tenth of them) are skipped as noise, and of the
    rest only those up to the lowest loss count (after it the loss diverges). The slope is
    taken against ``log(lr)``, as fastai's ``steep`` suggestion does; Lightning's own takes it
    against ``lr``, which favours the noisy smallest rates. ``None`` with fewer than 3 usable points.
    """
    points = [(lr, loss) for lr, loss in zip(lrs, losses) if lr > 0 and math.isfinite(loss)]
    if skip_begin is None:
        skip_begin = len(points) // 10
    points = points[skip_begin:]
    if len(points) < 3:
        return None
    lowest = min(range(len(points)), key=lambda i: points[i][1])
    window = points[: max(3, lowest + 1)]
    log_lrs = torch.tensor([math.log(lr) for lr, _ in window], dtype=torch.float64)
    values = torch.tensor([loss for _, loss in window], dtype=torch.float64)
    if bool((log_lrs[1:] <= log_lrs[:-1]).any()):
        return None
    slopes = torch.gradient(values, spacing=[log_lrs])[0]
    return float(window[int(torch.argmin(slopes))][0])


class _TaskSnapshot:
    """Everything about a task that a training run changes, to put back exactly."""

    def __init__(self, task: pl.LightningModule) -> None:
        self.task = task
        self.state = copy.deepcopy(task.state_dict())
        self.requires_grad = {name: p.requires_grad for name, p in task.named_parameters()}
        self.training = {name: m.training for name, m in task.named_modules()}
        self.hparams = copy.deepcopy(dict(task.hparams))
        self.attributes = {
            name: getattr(task, name) for name in ("learning_rate", "lr") if hasattr(task, name)
        }

    def restore(self) -> None:
        task = self.task
        with torch.no_grad():
            task.load_state_dict(self.state)
        for name, param in task.named_parameters():
            param.requires_grad_(self.requires_grad.get(name, param.requires_grad))
        for name, module in task.named_modules():
            module.training = self.training.get(name, module.training)
        task.hparams.clear()
        task.hparams.update(self.hparams)
        for name, value in self.attributes.items():
            setattr(task, name, value)
