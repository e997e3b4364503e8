"""Plots of a finetuning run, as PNG files or matplotlib figures.

Every function returns the figure, or saves it and returns the path when ``path`` is given.
Figures are drawn on matplotlib's Agg canvas without pyplot, so they work on machines with no
display and never change the user's matplotlib backend.

- :func:`plot_training_curves`: training and validation loss and metrics per epoch.
- :func:`plot_confusion_matrix`: the confusion matrix of a classifier on the validation set.
- :func:`plot_lr_finder`: the loss against the learning rate of :meth:`flash.Trainer.lr_find`.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "ValidationPredictions",
    "confusion_matrix",
    "new_figure",
    "plot_confusion_matrix",
    "plot_lr_finder",
    "plot_training_curves",
    "read_history",
    "save_figure",
    "validation_predictions",
]

STAGE_PREFIXES = ("train", "val", "test")


# -- figures --------------------------------------------------------------------------------------
def new_figure(width: float = 6.4, height: float = 4.8) -> Figure:
    """A figure on the Agg canvas (no display needed)."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike) -> Path:
    """Write ``figure`` as a PNG file at ``path`` (parent folders are created) and return the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"Plots are written as PNG files; give a path ending in .png, got {str(path)!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def _finish(figure: Figure, path: str | os.PathLike | None) -> Figure | Path:
    return figure if path is None else save_figure(figure, path)


# -- training curves ------------------------------------------------------------------------------
def read_history(source: Any) -> list[dict[str, float]]:
    """Per-epoch metrics from ``trainer.history``, a trainer, or a CSV file with an ``epoch`` column."""
    if hasattr(source, "history") and not isinstance(source, str | os.PathLike):
        source = source.history
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"No metrics file at {path}.")
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        return [
            {k: _number(v) for k, v in row.items() if k is not None and v not in ("", None)} for row in rows
        ]
    if isinstance(source, Iterable):
        rows = list(source)
        if not all(isinstance(row, Mapping) for row in rows):
            raise TypeError("history must be a list of dicts (one per epoch), as trainer.history is.")
        return [{k: float(v) for k, v in row.items()} for row in rows]
    raise TypeError(
        f"Cannot read metrics from {type(source).__name__}: pass trainer.history, a trainer or a CSV path."
    )


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError as error:
        raise ValueError(f"The metrics file holds {value!r}, which is not a number.") from error


def _metric_names(history: Sequence[Mapping[str, float]]) -> list[str]:
    """Base names (``loss``, ``accuracy``, ...) of the stage-prefixed metrics, loss first."""
    names: list[str] = []
    for row in history:
        for key in row:
            stage, _, base = key.partition("_")
            if stage in STAGE_PREFIXES and base and base not in names:
                names.append(base)
    return sorted(names, key=lambda n: (n != "loss", names.index(n)))


def plot_training_curves(history: Any, path: str | os.PathLike | None = None) -> Figure | Path:
    """Training and validation loss and metrics per epoch, one panel per metric.

    Args:
        history: ``trainer.history``, a trainer, or the path of a metrics CSV (one row per epoch).
        path: where to write the PNG; ``None`` returns the figure.
    """
    rows = read_history(history)
    if not rows:
        raise ValueError("No epochs to plot: the history is empty (train for at least one epoch first).")
    names = _metric_names(rows)
    if not names:
        raise ValueError(
            f"No train_/val_ metrics in the history (columns: {', '.join(rows[0])}); nothing to plot."
        )
    columns = min(3, len(names))
    lines = math.ceil(len(names) / columns)
    figure = new_figure(4.0 * columns, 3.2 * lines)
    axes = figure.subplots(lines, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        for stage in STAGE_PREFIXES:
            key = f"{stage}_{name}"
            points = [(row.get("epoch", i), row[key]) for i, row in enumerate(rows) if key in row]
            if points:
                epochs, values = zip(*points)
                ax.plot([e + 1 for e in epochs], values, marker="o", label=_stage_label(stage))
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    return _finish(figure, path)


def _stage_label(stage: str) -> str:
    return {"train": "training", "val": "validation", "test": "test"}[stage]


# -- predictions on the validation set ------------------------------------------------------------
@dataclass
class ValidationPredictions:
    """A classifier's outputs on every item of a stage, in the dataset's order.

    Attributes:
        targets: the true class index of each item (or a 0/1 row, multi-label).
        probabilities: ``(items, classes)`` class probabilities.
        labels: the class names.
    """

    targets: np.ndarray
    probabilities: np.ndarray
    labels: list[str]

    @property
    def predictions(self) -> np.ndarray:
        """The most probable class of each item."""
        return self.probabilities.argmax(axis=1)

    @property
    def true_class_probability(self) -> np.ndarray:
        """The probability each item got for its true class (single-label)."""
        return self.probabilities[np.arange(len(self.targets)), self.targets]


def validation_predictions(task: Any, data: Any, stage: str = "val") -> ValidationPredictions:
    """Run a classification ``task`` over the ``stage`` loader of a flash data module.

    Raises:
        ValueError: when the data module has no such split or the task is not a classifier.
    """
    from flash.core.data.datamodule import DataModule
    from flash.core.model.classification import ClassificationTask
    from flash.core.utils.progress import progress

    if not isinstance(task, ClassificationTask):
        raise ValueError(f"{type(task).__name__} is not a classifier; this plot needs class predictions.")
    if not isinstance(data, DataModule):
        raise TypeError(f"data must be a flash data module, got {type(data).__name__}.")
    if stage not in ("train", "val", "test"):
        raise ValueError(f"stage must be 'train', 'val' or 'test', got {stage!r}.")
    if data.splits.get(stage) is None:
        raise ValueError(f"The data module has no {stage} data, so there is nothing to evaluate.")
    if data.task is not task:
        data.attach_task(task)
    loader = data.val_dataloader() if stage == "val" else getattr(data, f"{stage}_dataloader")()
    targets: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    was_training = task.training
    task.eval()
    try:
        with torch.inference_mode():
            for batch in progress(loader, desc=f"Predicting {stage} set"):
                batch = task.transfer_batch_to_device(batch, task.device, 0)
                probabilities.append(task.probabilities(task(batch["input"])).float().cpu().numpy())
                targets.append(torch.as_tensor(batch["target"]).cpu().numpy())
    finally:
        task.train(was_training)
    labels = [str(task.class_name(i)) for i in range(task.num_classes)]
    return ValidationPredictions(np.concatenate(targets), np.concatenate(probabilities), labels)


# -- confusion matrix -----------------------------------------------------------------------------
def confusion_matrix(targets: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """``matrix[true, predicted]`` counts."""
    targets = np.asarray(targets, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if targets.shape != predictions.shape or targets.ndim != 1:
        raise ValueError("targets and predictions must be two lists of class indices of the same length.")
    if len(targets) and (
        min(targets.min(), predictions.min()) < 0 or max(targets.max(), predictions.max()) >= num_classes
    ):
        raise ValueError(f"Class indices must lie in 0..{num_classes - 1}.")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (targets, predictions), 1)
    return matrix


def plot_confusion_matrix(
    task: Any, data: Any, path: str | os.PathLike | None = None, stage: str = "val", max_classes: int = 30
) -> Figure | Path:
    """The confusion matrix of a single-label classifier on the validation (or ``stage``) set.

    Rows are true classes, columns predicted ones; each cell shows its count, and its colour the
    share of its row, so small classes stay readable. The title gives the accuracy.
    """
    if getattr(task, "multi_label", False):
        raise ValueError(
            "A confusion matrix needs single-label classes; this task is multi-label "
            "(look at its per-class metrics instead)."
        )
    result = validation_predictions(task, data, stage)
    matrix = confusion_matrix(result.targets, result.predictions, len(result.labels))
    return plot_matrix(matrix, result.labels, path=path, title_prefix=stage, max_classes=max_classes)


def plot_matrix(
    matrix: np.ndarray,
    labels: Sequence[str],
    path: str | os.PathLike | None = None,
    title_prefix: str = "val",
    max_classes: int = 30,
) -> Figure | Path:
    """Draw a confusion ``matrix`` (``matrix[true, predicted]``) with class ``labels``."""
    matrix = np.asarray(matrix)
    n = len(labels)
    if matrix.shape != (n, n):
        raise ValueError(f"The matrix is {matrix.shape} but there are {n} labels.")
    if n > max_classes:
        raise ValueError(
            f"{n} classes are too many to draw readably (max_classes={max_classes}); raise max_classes to draw anyway."
        )
    total = int(matrix.sum())
    accuracy = float(np.trace(matrix)) / total if total else float("nan")
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.55 * n + 2.5)
    figure = new_figure(size + 1.0, size)
    ax = figure.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, label="share of the true class")
    ticks = np.arange(n)
    ax.set_xticks(
        ticks,
        labels=[_short(label) for label in labels],
        rotation=45 if n > 4 else 0,
        ha="right" if n > 4 else "center",
    )
    ax.set_yticks(ticks, labels=[_short(label) for label in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    color="white" if shares[i, j] > 0.5 else "black",
                )
    ax.set_title(f"{title_prefix}: {total} items, accuracy {accuracy:.3f}")
    return _finish(figure, path)


def _short(label: Any, width: int = 16) -> str:
    text = str(label)
    return text if len(text) <= width else text[: width - 1] + "…"


# -- learning-rate finder -------------------------------------------------------------------------
def plot_lr_finder(
    lrs: Sequence[float],
    losses: Sequence[float],
    suggestion: float | None = None,
    path: str | os.PathLike | None = None,
) -> Figure | Path:
    """The smoothed training loss against the learning rate (log scale), the suggestion marked."""
    if len(lrs) != len(losses):
        raise ValueError(f"lrs and losses differ in length ({len(lrs)} and {len(losses)}).")
    if not len(lrs):
        raise ValueError("No learning-rate finder steps to plot.")
    figure = new_figure()
    ax = figure.subplots()
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.grid(alpha=0.3, which="both")
    if suggestion is not None:
        index = int(np.argmin(np.abs(np.log(np.asarray(lrs)) - math.log(suggestion))))
        ax.plot(
            [lrs[index]],
            [losses[index]],
            marker="o",
            markersize=10,
            color="red",
            label=f"suggested {suggestion:.2g}",
        )
        ax.legend()
    _clip_divergence(ax, losses)
    ax.set_title("learning-rate range test")
    return _finish(figure, path)


def _clip_divergence(ax: Any, losses: Sequence[float]) -> None:
    """Keep the y-axis on the useful part: the loss explodes once the rate is far too high."""
    finite = [loss for loss in losses if math.isfinite(loss)]
    if len(finite) < 2:
        return
    lowest = int(np.argmin(finite))
    bottom, top = min(finite), max(finite[: lowest + 1])
    span = top - bottom
    if span > 0 and max(finite) > top + span:
        ax.set_ylim(bottom - 0.1 * span, top + span)
