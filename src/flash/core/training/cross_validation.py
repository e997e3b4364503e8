"""``Trainer.cross_validate``: k-fold estimates of how well a task finetunes on this data.

A single small validation split cannot tell two settings apart: on 150 images one image is 0.65
points. Cross-validation pools the training and validation items, trains one fresh task per
fold (stratified by class; grouped when the user gives groups) with the trainer's own settings,
and reports every fold's metrics, their mean and standard deviation, and the out-of-fold outputs
(every item's logits from the fold that held it out), from which calibration and model choice
can be fitted without touching training data.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np

from flash.core.data.folds import make_folds
from flash.core.model.evaluation import outputs_over
from flash.core.training.chatter import lightning_chatter_hidden
from flash.core.utils.rng import rng_state, set_rng_state
from flash.core.utils.validation import check_int

TaskFactory = Callable[..., pl.LightningModule]


@dataclass
class CrossValidationResult:
    """What :meth:`flash.Trainer.cross_validate` measured.

    Attributes:
        folds: one row per fold: ``repeat``, ``fold``, ``train_items``, ``held_out_items``, ``seconds``
            and the task's validation metrics (``val_accuracy``, ``val_loss``, ...) after training.
        outputs: out-of-fold outputs, ``(repeats, items, ...)``: item ``i``'s logits from the
            task of the fold that held it out, items in the pooled order (training items, then
            validation items).
        targets: the pooled items' targets, ``(items, ...)``.
        fold_of: ``(repeats, items)``: the fold that held each item out.
        monitor: the metric the task is judged by (its ``monitor``, e.g. ``val_accuracy``).
        labels: the class names, where the task has them.
    """

    folds: list[dict[str, float]]
    outputs: np.ndarray = field(repr=False)
    targets: np.ndarray = field(repr=False)
    fold_of: np.ndarray = field(repr=False)
    monitor: str = "val_loss"
    labels: list[Any] | None = None

    def values(self, metric: str | None = None) -> list[float]:
        """``metric`` (default :attr:`monitor`) of every fold, in order."""
        metric = metric or self.monitor
        missing = [row["fold"] for row in self.folds if metric not in row]
        if missing:
            known = sorted({k for row in self.folds for k in row if k.startswith(("val_", "test_"))})
            raise KeyError(f"No {metric!r} in the folds' metrics; they have {', '.join(known)}.")
        return [row[metric] for row in self.folds]

    def mean(self, metric: str | None = None) -> float:
        """The mean of ``metric`` (default :attr:`monitor`) over the folds."""
        return float(statistics.fmean(self.values(metric)))

    def std(self, metric: str | None = None) -> float:
        """The sample standard deviation of ``metric`` over the folds (0 for one fold)."""
        values = self.values(metric)
        return float(statistics.stdev(values)) if len(values) > 1 else 0.0

    def standard_error(self, metric: str | None = None) -> float:
        """``std / sqrt(folds)``: how far the mean may be off (folds share items, so an under-estimate)."""
        return self.std(metric) / math.sqrt(len(self.folds))

    @property
    def metrics(self) -> list[str]:
        """The metrics every fold reports."""
        names = [k for k in self.folds[0] if k.startswith("val_")]
        return [k for k in names if all(k in row for row in self.folds)]

    def summary(self) -> dict[str, tuple[float, float]]:
        """``{metric: (mean, std)}`` for every validation metric."""
        return {name: (self.mean(name), self.std(name)) for name in self.metrics}

    def predictions(self, repeat: int = 0) -> np.ndarray:
        """Out-of-fold class indices (single-label classification: the arg-max of :attr:`outputs`)."""
        outputs = self.outputs[repeat]
        if outputs.ndim != 2:
            raise ValueError("predictions() needs class logits (a single-label classification task).")
        return outputs.argmax(axis=1)

    def to_frame(self) -> Any:
        """The per-fold rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.folds)

    def __str__(self) -> str:
        rows = [f"{len(self.folds)} folds"]
        rows += [f"{name}: {mean:.4f} ± {std:.4f}" for name, (mean, std) in self.summary().items()]
        return "\n".join(rows)


def cross_validate(
    trainer: Any,
    model: pl.LightningModule | TaskFactory,
    datamodule: Any,
    *,
    folds: int = 5,
    repeats: int = 1,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
    strategy: Any = "no_freeze",
    train_bn: bool | None = None,
    verbose: bool = True,
) -> CrossValidationResult:
    """Estimate how well ``model`` finetunes on ``datamodule`` by k-fold cross-validation.

    The training and validation items are pooled and split into ``folds`` folds (stratified by
    class for single-label data; items sharing a ``groups`` value stay in one fold). For every
    fold, a fresh task trains on the other folds with this trainer's settings and ``strategy``
    (as :meth:`finetune` would), then is evaluated on the held-out fold. Fold runs write their
    logs under ``<default_root_dir>/cross_validation/``; they save no checkpoints. Each fold is seeded from ``(seed, repeat, fold)``;
    Python's, NumPy's and torch's global generators are put back afterwards.

    Args:
        model: a task (each fold trains a copy of it as it is now; a task built from its data's
            fitted preprocessing, as tables are, is rebuilt per fold with the same options by its
            :meth:`~flash.core.model.task.Task.fresh_for`) or a function returning a fresh task,
            called with the fold's data module when it takes an argument.
        datamodule: a flash data module with labelled training data.
        folds: folds per repeat (at least 2, at most the smallest class's items).
        repeats: how many times to repeat with fresh folds (seeds ``seed``, ``seed + 1``, ...).
        seed: seed of the folds and of each fold's run.
        groups: one group per pooled item (training items, then validation items).
        strategy, train_bn: as in :meth:`finetune`.
        verbose: print one line per finished fold.

    Returns:
        A :class:`CrossValidationResult`.

    Raises:
        ValueError, TypeError: for bad arguments or data, before any training.
    """
    from flash.core.data.datamodule import DataModule
    from flash.core.model.task import Task
    from flash.core.training.finetuning import FlashBaseFinetuning, resolve_strategy

    if not isinstance(datamodule, DataModule):
        raise TypeError(f"cross_validate needs a flash data module, got {type(datamodule).__name__}.")
    check_int(repeats, "repeats", 1)
    check_int(seed, "seed", 0)
    if not (isinstance(model, pl.LightningModule) or callable(model)):
        raise TypeError(f"model must be a task or a function returning one, got {type(model).__name__}.")
    if (
        isinstance(model, pl.LightningModule)
        and datamodule.fold_needs_fresh_task
        and type(model).fresh_for is Task.fresh_for
    ):
        raise TypeError(
            f"{type(datamodule).__name__} fits its preprocessing on the training items, so every fold "
            f"needs a task built from that fold's data: pass a function, e.g. "
            f"model={datamodule.fold_task_example}."
        )
    probe = resolve_strategy(strategy, train_bn=train_bn)  # a bad strategy fails here, not in fold 3
    pooled = datamodule.pooled_training()
    plans = [make_folds(pooled.targets, folds, seed + r, groups) for r in range(repeats)]
    template = _template(model)
    root = Path(trainer.default_root_dir) / "cross_validation"
    rows: list[dict[str, float]] = []
    outputs: np.ndarray | None = None
    fold_of = np.full((repeats, len(pooled)), -1, dtype=np.int64)
    monitor, labels = "val_loss", None
    total = repeats * folds
    for repeat, plan in enumerate(plans):
        for index, (train_idx, held_out) in enumerate(plan):
            start = time.perf_counter()
            fold_data = datamodule.fold(train_idx, held_out)
            run_seed = (seed * 1_000_003 + repeat * 1_009 + index) % (2**32)
            with _seeded(run_seed), lightning_chatter_hidden(fold=True):
                task = _fresh_task(model, template, fold_data)
                if isinstance(probe, FlashBaseFinetuning):
                    probe.validate(task, trainer.max_epochs)
                fold_trainer = trainer.fold_trainer(root / f"repeat_{repeat}_fold_{index}")
                fold_trainer.finetune(task, fold_data, strategy=strategy, train_bn=train_bn)
                metrics = fold_trainer.validate(task, datamodule=fold_data, verbose=False)
                held_out_outputs = _held_out_outputs(task, fold_data)
            if outputs is None:
                outputs = np.zeros((repeats, len(pooled), *held_out_outputs.shape[1:]), dtype=np.float32)
            outputs[repeat, held_out] = held_out_outputs
            fold_of[repeat, held_out] = index
            row: dict[str, float] = {
                "repeat": repeat,
                "fold": index,
                "train_items": len(train_idx),
                "held_out_items": len(held_out),
                "seconds": time.perf_counter() - start,
            }
            row.update({k: float(v) for k, v in (metrics[0] if metrics else {}).items()})
            rows.append(row)
            monitor = str(getattr(task, "monitor", None) or "val_loss")
            labels = getattr(task, "labels", None)
            if verbose:
                shown = row.get(monitor, row.get("val_loss", float("nan")))
                print(
                    f"fold {len(rows)}/{total}: {monitor} {shown:.4f} "
                    f"({len(train_idx)} train, {len(held_out)} held out, {row['seconds']:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    assert outputs is not None
    result = CrossValidationResult(
        rows,
        outputs,
        np.asarray(pooled.targets),
        fold_of,
        monitor,
        None if labels is None else list(labels),
    )
    if verbose:
        print(str(result), file=sys.stderr, flush=True)
    return result


def untrained_copy(model: pl.LightningModule) -> pl.LightningModule:
    """A copy of ``model`` as it is now (weights, settings), detached from any trainer."""
    trainer = model._trainer
    model._trainer = None
    try:
        return copy.deepcopy(model)
    finally:
        model._trainer = trainer


def _template(model: pl.LightningModule | TaskFactory) -> pl.LightningModule | None:
    """An untouched copy of a task given as an instance, so every fold starts from the same weights."""
    return untrained_copy(model) if isinstance(model, pl.LightningModule) else None


def _fresh_task(
    model: pl.LightningModule | TaskFactory, template: pl.LightningModule | None, data: Any
) -> pl.LightningModule:
    if template is not None:
        rebuilt = template.fresh_for(data) if data.fold_needs_fresh_task else None
        return rebuilt if rebuilt is not None else copy.deepcopy(template)
    assert callable(model)
    task = model(data) if _takes_argument(model) else model()
    if not isinstance(task, pl.LightningModule):
        raise TypeError(f"The task factory returned {type(task).__name__}, not a task.")
    return task


def _takes_argument(factory: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) and p.default is p.empty
        for p in parameters
    )


def _held_out_outputs(task: pl.LightningModule, data: Any) -> np.ndarray:
    """The task's outputs (its ``forward``: logits, as ``predict`` sees them) for the fold's held-out
    items, in their order."""
    outputs, _ = outputs_over(task, data.val_dataloader())
    order = getattr(data.dataset("val"), "order", None)  # position -> item, where a dataset reorders
    stacked = outputs.cpu().numpy()
    if order is not None:
        restored = np.empty_like(stacked)
        restored[np.asarray(order)] = stacked
        return restored
    return stacked


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """``seed_everything(seed)`` for the block; the global generators and ``PL_GLOBAL_SEED`` after it
    are as before."""
    state = rng_state()
    env = {k: os.environ.get(k) for k in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    pl.seed_everything(seed, workers=True, verbose=False)
    try:
        yield
    finally:
        set_rng_state(state)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
