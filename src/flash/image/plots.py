"""Image grids: a batch as the model sees it in training, and the worst-classified validation images.

Both return a matplotlib figure, or save a PNG and return its path when ``path`` is given; see
:mod:`flash.core.utils.plots` for the generic plots (training curves, confusion matrix).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from flash.core.utils.plots import new_figure, save_figure, validation_predictions
from flash.core.utils.validation import check_int

__all__ = ["plot_image_grid", "plot_worst_predictions", "show_batch"]


def _check_data(data: Any) -> None:
    from flash.image.data import ImageClassificationData

    if not isinstance(data, ImageClassificationData):
        raise TypeError(f"data must be an ImageClassificationData, got {type(data).__name__}.")


def _check_count(num_images: Any) -> int:
    check_int(num_images, "num_images", 1)
    return num_images


def _pixels(data: Any, stage: str, indices: Sequence[int]) -> np.ndarray:
    """Items ``indices`` of ``stage`` as ``(N, H, W, 3)`` floats in [0, 1], as the model sees them
    (augmented for training), un-normalised with the preprocessing's mean and std."""
    dataset = data.dataset(stage)
    had_pixels = getattr(dataset, "pixels", True)
    dataset.pixels = True  # items may be feature-cache placeholders right after training
    try:
        batch = data.collate_fn(stage)([dataset[i] for i in indices])
    finally:
        dataset.pixels = had_pixels
    images = batch["input"].float()
    mean = torch.tensor(data.preprocessing["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(data.preprocessing["std"], dtype=torch.float32).view(1, -1, 1, 1)
    images = (images * std + mean).clamp(0.0, 1.0)
    return images.permute(0, 2, 3, 1).contiguous().numpy()


def plot_image_grid(
    images: np.ndarray,
    titles: Sequence[str],
    *,
    colors: Sequence[str] | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure | Path:
    """A grid of ``(N, H, W, 3)`` images in [0, 1], each with its title."""
    count = len(images)
    if count == 0:
        raise ValueError("No images to draw.")
    if len(titles) != count:
        raise ValueError(f"{count} images but {len(titles)} titles.")
    columns = min(count, 4 if count <= 16 else 6)
    rows = math.ceil(count / columns)
    figure = new_figure(2.6 * columns, 2.8 * rows + (0.4 if title else 0.0))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= count:
            continue
        ax.imshow(images[i], interpolation="nearest" if images[i].shape[0] < 96 else "antialiased")
        ax.set_title(titles[i], fontsize=9, color=(colors[i] if colors else "black"))
    if title:
        figure.suptitle(title)
    return figure if path is None else save_figure(figure, path)


def _class_names(data: Any, target: Any) -> str:
    labels = data.labels or []
    values = np.asarray(target)
    if values.ndim == 0:
        index = int(values)
        return str(labels[index]) if index < len(labels) else str(index)
    return ", ".join(str(labels[i]) for i in np.flatnonzero(values > 0.5)) or "(none)"


def _batch_indices(data: Any, stage: str, count: int) -> list[int]:
    """Training: the first items of epoch 0's shuffle, as the first batch has them. Other
    stages: items spread evenly over the split (which is ordered by class)."""
    dataset = data.dataset(stage)
    count = min(count, len(dataset))
    if stage == "train":
        order: list[int] = []
        for index in data.train_sampler(dataset) or range(len(dataset)):
            order.extend(index if isinstance(index, list) else [int(index)])
            if len(order) >= count:
                return order[:count]
        return order
    return sorted({int(i) for i in np.linspace(0, len(dataset) - 1, count).round()})


def show_batch(
    data: Any,
    task: Any = None,
    *,
    stage: str = "train",
    num_images: int = 16,
    path: str | os.PathLike | None = None,
) -> Figure | Path:
    """``num_images`` items of ``stage`` as the model receives them, un-normalised, each titled with
    its class: for training, the first items of the first epoch's shuffle, randomly cropped and
    flipped; for other stages, items spread over the split.

    Args:
        data: an :class:`~flash.image.ImageClassificationData`.
        task: the task, whose preprocessing (image size, mean, std) the data takes first; by default
            the data's own (the task's once it was trained on it).
        stage: ``"train"``, ``"val"``, ``"test"`` or ``"predict"``.
        num_images: how many items to draw (fewer if the split is smaller).
        path: where to write the PNG; ``None`` returns the figure.
    """
    _check_data(data)
    num_images = _check_count(num_images)
    if stage not in ("train", "val", "test", "predict"):
        raise ValueError(f"stage must be 'train', 'val', 'test' or 'predict', got {stage!r}.")
    if data.splits.get(stage) is None:
        raise ValueError(f"The data module has no {stage} images to show.")
    if task is not None and data.task is not task:
        data.attach_task(task)
    indices = _batch_indices(data, stage, num_images)
    images = _pixels(data, stage, indices)
    split = data.splits[stage]
    titles = [_class_names(data, split.targets[i]) if split.targets is not None else "" for i in indices]
    size = images.shape[1]
    caption = f"{stage} batch as the model sees it ({size}x{images.shape[2]} px"
    caption += ", augmented)" if stage == "train" else ")"
    return plot_image_grid(images, titles, title=caption, path=path)


def plot_worst_predictions(
    task: Any, data: Any, *, num_images: int = 9, path: str | os.PathLike | None = None
) -> Figure | Path:
    """The validation images the task gets most wrong (lowest probability of the true class),
    each with its true and predicted class; wrong predictions in red.

    Raises:
        ValueError: without validation data, or for a multi-label task.
    """
    _check_data(data)
    num_images = _check_count(num_images)
    if getattr(task, "multi_label", False):
        raise ValueError(
            "The worst predictions are ranked by the true class's probability; this task is multi-label."
        )
    result = validation_predictions(task, data, "val")
    order = np.argsort(result.true_class_probability, kind="stable")[:num_images]
    images = _pixels(data, "val", order.tolist())
    titles, colors = [], []
    for i in order:
        true, predicted = int(result.targets[i]), int(result.predictions[i])
        probability = float(result.probabilities[i, predicted])
        titles.append(
            f"true: {result.labels[true]}\npredicted: {result.labels[predicted]} ({probability:.2f})"
        )
        colors.append("black" if true == predicted else "red")
    wrong = int((result.predictions != result.targets).sum())
    caption = f"worst validation predictions ({wrong} of {len(result.targets)} wrong)"
    return plot_image_grid(images, titles, colors=colors, title=caption, path=path)
