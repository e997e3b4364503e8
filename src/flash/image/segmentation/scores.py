"""Scores of predicted masks against true masks: confusion matrix, IoU per class, mean IoU."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np


def mask_confusion(
    predictions: Iterable[Any], masks: Iterable[Any], num_classes: int, ignore_index: int
) -> np.ndarray:
    """The ``(num_classes, num_classes)`` pixel confusion matrix (rows: true class, columns:
    predicted class) of pairs of ``(H, W)`` masks; pixels of ``ignore_index`` are left out.

    Raises:
        ValueError: for a predicted mask whose shape differs from its true mask's.
    """
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for index, (predicted, true) in enumerate(zip(predictions, masks, strict=True)):
        predicted, true = np.asarray(predicted).astype(np.int64), np.asarray(true).astype(np.int64)
        if predicted.shape != true.shape:
            raise ValueError(f"Predicted mask {index} is {predicted.shape}, its true mask {true.shape}.")
        valid = (true != ignore_index) & (true < num_classes)
        codes = true[valid] * num_classes + np.clip(predicted[valid], 0, num_classes - 1)
        confusion += np.bincount(codes, minlength=num_classes**2).reshape(num_classes, num_classes)
    return confusion


def iou_scores(confusion: np.ndarray) -> dict[str, Any]:
    """``per_class`` IoU (NaN for a class absent from both predictions and masks), ``mean_iou``
    over the other classes, and ``pixel_accuracy``."""
    intersection = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(union > 0, intersection / np.maximum(union, 1), np.nan)
    total = confusion.sum()
    return {
        "per_class": per_class,
        "mean_iou": float(np.nanmean(per_class)) if (union > 0).any() else float("nan"),
        "pixel_accuracy": float(intersection.sum() / total) if total else float("nan"),
    }
