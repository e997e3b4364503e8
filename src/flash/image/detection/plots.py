"""Images with their true and predicted boxes.

Returns a matplotlib figure, or saves a PNG and returns its path when ``path`` is given.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from flash.core.utils.plots import new_figure, save_figure

__all__ = ["plot_detections"]

TRUE_COLOR = "limegreen"
PREDICTED_COLOR = "red"


def _draw(ax: Any, image: np.ndarray, truth: dict[str, list], predicted: dict[str, list], title: str) -> None:
    ax.imshow(image)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    for box in truth.get("boxes", []):
        x0, y0, x1, y1 = box
        ax.add_patch(
            Rectangle(
                (x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=TRUE_COLOR, linewidth=1.2, linestyle="--"
            )
        )
    for box, label, score in zip(predicted["boxes"], predicted["labels"], predicted["scores"]):
        x0, y0, x1, y1 = box
        ax.add_patch(
            Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=PREDICTED_COLOR, linewidth=1.2)
        )
        ax.text(x0, y0, f"{label} {score:.2f}", color="white", fontsize=6, va="bottom",
                bbox={"facecolor": PREDICTED_COLOR, "alpha": 0.7, "pad": 0.5, "linewidth": 0})  # fmt: skip


def plot_detections(
    task: Any,
    data: Any,
    *,
    stage: str = "val",
    num_images: int = 6,
    score_threshold: float | None = None,
    path: str | os.PathLike | None = None,
) -> Figure | Path:
    """Images of ``stage`` with their true boxes (green, dashed) and the task's predicted boxes
    (red, with class and score), in the images' own pixels.

    Args:
        task: an :class:`~flash.image.ObjectDetector`.
        data: an :class:`~flash.image.ObjectDetectionData` holding ``stage``.
        stage: ``"train"``, ``"val"``, ``"test"`` or ``"predict"`` (no true boxes).
        num_images: how many images to draw (spread over the split; fewer if it is smaller).
        score_threshold: predictions below it are not drawn (default: the task's).
        path: where to write the PNG; ``None`` returns the figure.
    """
    from flash.image.detection.data import ObjectDetectionData
    from flash.image.io import read_any

    if not isinstance(data, ObjectDetectionData):
        raise TypeError(f"data must be an ObjectDetectionData, got {type(data).__name__}.")
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a whole number >= 1, got {num_images!r}.")
    split = data.splits.get(stage) if stage in ("train", "val", "test", "predict") else None
    if split is None:
        raise ValueError(f"The data module has no {stage!r} images to draw.")
    indices = sorted({int(i) for i in np.linspace(0, len(split) - 1, min(num_images, len(split))).round()})
    inputs = [split.inputs[i] for i in indices]
    predicted = task.predict(inputs, score_threshold=score_threshold)
    columns = min(len(indices), 3)
    rows = math.ceil(len(indices) / columns)
    figure = new_figure(4.2 * columns, 3.4 * rows + 0.4)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(indices) :]:
        ax.set_axis_off()
    for ax, index, item, found in zip(axes, indices, inputs, predicted):
        truth: dict[str, list] = {}
        if split.targets is not None:
            target = split.targets[index]
            truth = {
                "boxes": target["boxes"].tolist(),
                "labels": [task.class_name(k) for k in target["labels"]],
            }
        title = os.path.basename(item) if isinstance(item, str) else f"{stage} image {index}"
        count = f"{len(found['boxes'])} found" + (f", {len(truth['boxes'])} true" if truth else "")
        _draw(ax, np.asarray(read_any(item)), truth, found, f"{title}\n{count}")
    figure.suptitle(f"{stage} images: true boxes dashed green, predicted red")
    return figure if path is None else save_figure(figure, path)
