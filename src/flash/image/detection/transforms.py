"""Images and their boxes, transformed together.

1. :meth:`DetectionPipeline.load` decodes an image and resizes it so its longer side is
   ``image_size`` (keeping its aspect ratio): an 8-bit array, the same every epoch, cached.
2. :meth:`DetectionPipeline.__call__` augments it for training, moving the boxes with the pixels:
   a random scale-crop (a zoom into part of the image, resized back; boxes are clipped to it and
   those left with less than ``min_visibility`` of their area are dropped) and random flips.
3. :class:`DetectionCollate` pads the images of a batch to a common size (a multiple of 32,
   at the bottom and right, so box coordinates are unchanged) and normalises them.

A box's coordinates in the network's input are its coordinates in the original image times
``fitted_size / original_size``: :func:`fitted_size` is the one place that size is computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from flash.image.io import read_any
from flash.image.transforms import ImageCollate

SIZE_MULTIPLE = 32
"""Batches are padded to a multiple of the backbone's largest stride."""


def fitted_size(height: int, width: int, image_size: int) -> tuple[int, int]:
    """``(height, width)`` of an image resized so its longer side is ``image_size``."""
    scale = image_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def check_fraction_pair(value: Any, name: str) -> tuple[float, float]:
    pair = (
        tuple(float(v) for v in value) if isinstance(value, Sequence) and not isinstance(value, str) else ()
    )
    if len(pair) != 2 or not 0 < pair[0] <= pair[1] <= 1:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {value!r}.")
    return pair  # type: ignore[return-value]


def check_probability(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} is a probability between 0 and 1, got {value!r}.")
    return float(value)


class DetectionPipeline:
    """How one stage turns an image and its boxes into the network's input.

    Args:
        image_size: the longer side of the network's input, in pixels.
        train: augment (scale-crop and flips) or not.
        crop_scale: area range of the random scale-crop; ``(1, 1)`` turns it off.
        hflip, vflip: probabilities of a horizontal and a vertical flip in training.
        min_visibility: a box cut by the crop is kept while at least this fraction of it is visible.
    """

    def __init__(
        self,
        image_size: int,
        train: bool,
        crop_scale: Sequence[float] = (1.0, 1.0),
        hflip: float = 0.5,
        vflip: float = 0.0,
        min_visibility: float = 0.4,
    ) -> None:
        self.image_size = int(image_size)
        self.train = bool(train)
        self.crop_scale = check_fraction_pair(crop_scale, "crop_scale")
        self.hflip = check_probability(hflip, "hflip")
        self.vflip = check_probability(vflip, "vflip")
        self.min_visibility = check_probability(min_visibility, "min_visibility")

    @property
    def key(self) -> int:
        """What :meth:`load`'s output depends on (cached arrays are valid while it is equal)."""
        return self.image_size

    def load(self, item: Any, what: str = "image") -> tuple[np.ndarray, tuple[int, int]]:
        """Decode ``item``; return it resized (longer side ``image_size``) and its original ``(height, width)``."""
        image = read_any(item, None, what)
        width, height = image.size
        new_height, new_width = fitted_size(height, width, self.image_size)
        if (new_width, new_height) != (width, height):
            image = image.resize((new_width, new_height), Image.BILINEAR)
        return np.array(image, dtype=np.uint8), (height, width)

    def __call__(
        self, array: np.ndarray, boxes: np.ndarray, labels: np.ndarray
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """The image as a ``(3, H, W)`` uint8 tensor with its boxes (in its pixels) and labels."""
        image = torch.from_numpy(array).permute(2, 0, 1)
        if not self.train:
            return image.contiguous(), boxes, labels
        height, width = image.shape[-2:]
        low, high = self.crop_scale
        if low < 1:
            area = low + (high - low) * float(torch.rand(()))
            if area < 1:
                image, boxes, labels = self._scale_crop(image, boxes, labels, math.sqrt(area))
        if self.hflip and float(torch.rand(())) < self.hflip:
            image = image.flip(-1)
            boxes = boxes.copy()
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
        if self.vflip and float(torch.rand(())) < self.vflip:
            image = image.flip(-2)
            boxes = boxes.copy()
            boxes[:, [1, 3]] = height - boxes[:, [3, 1]]
        return image.contiguous(), boxes, labels

    def _scale_crop(
        self, image: torch.Tensor, boxes: np.ndarray, labels: np.ndarray, side: float
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        height, width = image.shape[-2:]
        crop_h, crop_w = max(1, round(height * side)), max(1, round(width * side))
        top = int(torch.randint(0, height - crop_h + 1, ()))
        left = int(torch.randint(0, width - crop_w + 1, ()))
        crop = image[:, top : top + crop_h, left : left + crop_w]
        image = F.resize(crop, [height, width], antialias=True)
        shifted = boxes - np.array([left, top, left, top], dtype=np.float32)
        clipped = shifted.copy()
        clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, crop_w)
        clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, crop_h)
        area = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
        visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        keep = (visible > 0) & (visible >= self.min_visibility * area)
        scale = np.array([width / crop_w, height / crop_h] * 2, dtype=np.float32)
        return image, (clipped[keep] * scale).astype(np.float32), labels[keep]


class DetectionCollate:
    """Items ``{"index", "input", "size", "target"?}`` to a batch.

    ``batch["input"]`` is ``{"images": (N, 3, H, W) normalised, "image_sizes": (N, 2)}`` (each
    image's original height and width, so predictions map back to it); ``batch["target"]`` a list
    of ``{"boxes": (K, 4) float, "labels": (K,) int64}`` in the input's pixels.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels_last: bool = True) -> None:
        self.images = ImageCollate(mean, std, channels_last)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        heights = [int(item["input"].shape[-2]) for item in items]
        widths = [int(item["input"].shape[-1]) for item in items]
        height = math.ceil(max(heights) / SIZE_MULTIPLE) * SIZE_MULTIPLE
        width = math.ceil(max(widths) / SIZE_MULTIPLE) * SIZE_MULTIPLE
        pixels = torch.zeros((len(items), 3, height, width), dtype=torch.uint8)
        for i, item in enumerate(items):
            pixels[i, :, : heights[i], : widths[i]] = item["input"]
        batch: dict[str, Any] = {
            "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
            "input": {
                "images": self.images.normalize(pixels),
                "image_sizes": torch.tensor([item["size"] for item in items], dtype=torch.long),
            },
        }
        if "target" in items[0]:
            batch["target"] = [
                {
                    "boxes": torch.as_tensor(item["target"]["boxes"], dtype=torch.float32).reshape(-1, 4),
                    "labels": torch.as_tensor(item["target"]["labels"], dtype=torch.long).reshape(-1),
                }
                for item in items
            ]
        return batch
