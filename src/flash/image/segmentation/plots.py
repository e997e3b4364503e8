"""Plots of a segmentation task: masks over their images, and the IoU of each class.

Both return a matplotlib figure, or save a PNG and return its path when ``path`` is given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from flash.core.utils.plots import new_figure, save_figure
from flash.image.io import read_any
from flash.image.segmentation.data import SemanticSegmentationData, read_mask
from flash.image.segmentation.scores import iou_scores, mask_confusion

__all__ = ["colour_masks", "overlay", "plot_class_iou", "plot_predictions"]


def class_colours(num_classes: int) -> np.ndarray:
    """One RGB colour (0-255) per class, from matplotlib's ``tab20`` (then ``hsv`` past 20 classes)."""
    cmap = colormaps["tab20"] if num_classes <= 20 else colormaps["hsv"]
    positions = np.arange(num_classes) / (20 if num_classes <= 20 else num_classes)
    return (np.asarray(cmap(positions))[:, :3] * 255).round().astype(np.uint8)


def colour_masks(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """An ``(H, W)`` class-index mask as an ``(H, W, 4)`` RGBA image; other values transparent."""
    mask = np.asarray(mask)
    out = np.zeros((*mask.shape, 4), dtype=np.uint8)
    valid = mask < num_classes
    out[valid, :3] = class_colours(num_classes)[mask[valid]]
    out[valid, 3] = 255
    return out


def overlay(image: np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """``image`` (``(H, W, 3)`` uint8) with ``mask``'s class colours blended over it."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}.")
    coloured = colour_masks(mask, num_classes)
    weight = (coloured[..., 3:] / 255.0) * alpha
    return (image * (1 - weight) + coloured[..., :3] * weight).round().astype(np.uint8)


def _check(task: Any, data: Any, stage: str) -> Any:
    if not isinstance(data, SemanticSegmentationData):
        raise TypeError(f"data must be a SemanticSegmentationData, got {type(data).__name__}.")
    if not hasattr(task, "predict") or not hasattr(task, "num_classes"):
        raise TypeError(f"task must be a SemanticSegmentation, got {type(task).__name__}.")
    split = data.splits.get(stage)
    if split is None or split.targets is None:
        raise ValueError(f"The data module has no {stage} images with masks to plot.")
    return split


def _names(task: Any) -> list[str]:
    return [task.class_name(i) for i in range(task.num_classes)]


def plot_predictions(
    task: Any,
    data: Any,
    *,
    stage: str = "val",
    num_images: int = 4,
    alpha: float = 0.5,
    path: str | os.PathLike | None = None,
) -> Figure | Path:
    """``num_images`` images of ``stage`` spread over the split, each as three panels: the image,
    its true mask over it, and the predicted mask over it (with the image's IoU), and a legend
    of the class colours."""
    split = _check(task, data, stage)
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a whole number >= 1, got {num_images!r}.")
    count = min(num_images, len(split))
    indices = sorted({int(i) for i in np.linspace(0, len(split) - 1, count).round()})
    inputs = [split.inputs[i] for i in indices]
    predictions = task.predict(inputs)
    figure = new_figure(9.0, 2.6 * len(indices) + 0.6)
    axes = figure.subplots(len(indices), 3, squeeze=False)
    for row, (index, predicted) in enumerate(zip(indices, predictions)):
        image = np.asarray(read_any(split.inputs[index]))
        true = read_mask(split.targets[index])
        score = iou_scores(mask_confusion([predicted], [true], task.num_classes, data.ignore_index))
        panels = (
            (image, f"{stage} image {index}"),
            (overlay(image, true, task.num_classes, alpha), "true mask"),
            (overlay(image, predicted, task.num_classes, alpha), f"predicted (IoU {score['mean_iou']:.2f})"),
        )
        for ax, (pixels, title) in zip(axes[row], panels):
            ax.imshow(pixels, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
    colours = class_colours(task.num_classes) / 255.0
    handles = [_patch(colour) for colour in colours]
    figure.legend(
        handles, _names(task), loc="outside lower center", ncols=min(6, task.num_classes), fontsize=8
    )
    return figure if path is None else save_figure(figure, path)


def _patch(colour: Sequence[float]) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=tuple(colour))


def plot_class_iou(
    task: Any, data: Any, *, stage: str = "val", path: str | os.PathLike | None = None
) -> Figure | Path:
    """A bar per class: its IoU over every image of ``stage`` (classes that appear neither in the
    masks nor in the predictions have no bar), with the mean IoU as a line."""
    split = _check(task, data, stage)
    predictions = task.predict(list(split.inputs))
    masks = [read_mask(m) for m in split.targets]
    scores = iou_scores(mask_confusion(predictions, masks, task.num_classes, data.ignore_index))
    names = _names(task)
    figure = new_figure(max(5.0, 0.45 * len(names) + 2), 4.0)
    ax = figure.subplots()
    values = np.nan_to_num(scores["per_class"], nan=0.0)
    ax.bar(range(len(names)), values, color=class_colours(len(names)) / 255.0)
    ax.axhline(
        scores["mean_iou"],
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"mean IoU {scores['mean_iou']:.3f}",
    )
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    ax.set_title(f"{stage} IoU per class ({len(split)} images)")
    ax.legend(loc="upper right", fontsize=8)
    return figure if path is None else save_figure(figure, path)
