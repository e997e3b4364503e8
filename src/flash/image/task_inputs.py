"""What every image task shares at its edges: images in (bytes or base64), an example batch for export."""

from __future__ import annotations

import base64
import binascii
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from flash.image.dataset import ImageDataset
from flash.image.io import decode_image_bytes, list_images
from flash.image.transforms import ImageCollate, ImagePipeline


class ImageTaskInputs:
    """Mixin for tasks whose input is one RGB image (classification, segmentation, detection).

    It implements the task contract's input side: :meth:`decode_serve_input` (base64 in JSON),
    :meth:`decode_serve_file` (uploaded bytes, no base64 round trip) and :meth:`example_input`.
    A task that wants images decoded smaller than their full size (because it predicts one
    label, not pixels or boxes) overrides :meth:`serve_decode_size`.
    """

    input_description = "the base64 of an image file's bytes (JPEG, PNG, ...)"
    input_schema = {"type": "string", "contentEncoding": "base64"}
    example_size_multiple = 1
    """The exported graph's image side is rounded up to a multiple of this."""

    preprocessing: dict[str, Any]

    def keep_pixel_settings(
        self, preprocessing: dict[str, Any], image_size: int | None, channels_last: bool
    ) -> None:
        """Keep the normalisation and input size (``image_size`` overrides the backbone's) and the
        memory format the task computes in."""
        self.preprocessing = dict(preprocessing)
        if image_size is not None:
            self.preprocessing["image_size"] = image_size
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[attr-defined]

    def serve_decode_size(self) -> tuple[int | None, int]:
        """``(short side, resample)`` to decode served images at; ``None``: their full size."""
        return None, Image.BILINEAR

    def decode_serve_input(self, value: Any) -> Image.Image:
        """Base64 of an image file's bytes (a ``data:image/...;base64,`` prefix is allowed) -> RGB image."""
        if not isinstance(value, str):
            raise ValueError(
                f"An image input must be a base64 string of the image file, got {type(value).__name__}."
            )
        text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("The image input is not valid base64.") from None
        return self.decode_serve_file(data)

    def decode_serve_file(self, data: bytes, filename: str = "") -> Image.Image:
        """An uploaded image file's bytes -> RGB image, under the decode limits in force."""
        if not data:
            raise ValueError(f"The image {filename!r} is empty." if filename else "The image input is empty.")
        fit_size, resample = self.serve_decode_size()
        return decode_image_bytes(data, fit_size, resample)

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        """A seeded batch of square ``image_size`` images (the exported graph takes this size)."""
        size = int(self.preprocessing["image_size"])
        size = math.ceil(size / self.example_size_multiple) * self.example_size_multiple
        generator = torch.Generator().manual_seed(0)
        return torch.randn(batch_size, 3, size, size, generator=generator)


class PipelineImageInputs(ImageTaskInputs):
    """Mixin for tasks that give one result per image (a label, a vector) from images read through
    an :class:`~flash.image.transforms.ImagePipeline`: predict items, batches, and served images
    decoded at about the size the model needs (not their full size)."""

    channels_last: bool
    _eval_transform: Any

    def eval_pipeline(self) -> ImagePipeline:
        """How images are read for prediction (the evaluation crop, or the user's transform)."""
        return ImagePipeline(self.preprocessing, train=False, transform=self._eval_transform)

    def pipeline_dataset(self, inputs: Any) -> tuple[ImageDataset, bool]:
        """The images of ``inputs`` (see :func:`predict_items`) as a dataset, and whether it was one."""
        items, single = predict_items(inputs)
        return ImageDataset(items, None, self.eval_pipeline(), cache=None, stage="predict"), single

    def collate_fn(self) -> Callable[[list[Any]], Any]:
        return ImageCollate(self.preprocessing["mean"], self.preprocessing["std"], self.channels_last)

    def serve_decode_size(self) -> tuple[int | None, int]:
        pipeline = self.eval_pipeline()
        return pipeline.fit_size, pipeline.resample


def predict_items(inputs: Any) -> tuple[list[Any], bool]:
    """The images of a ``predict`` call as a list, and whether ``inputs`` was one image: a path
    (file, or folder: every image below it), a PIL image, an array or tensor (one image or a
    stack), or a list of them."""
    if isinstance(inputs, str | os.PathLike):
        path = Path(inputs)
        if path.is_dir():
            images = list_images(path, recursive=True)
            if not images:
                raise ValueError(f"The folder {str(inputs)!r} holds no images.")
            return images, False
        if not path.exists():
            raise FileNotFoundError(f"No image or folder at {str(inputs)!r}.")
        return [str(path)], True
    if isinstance(inputs, Image.Image):
        return [inputs], True
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 2 or (inputs.ndim == 3 and inputs.shape[-1] in (1, 3, 4)):
            return [inputs], True
        if inputs.ndim in (3, 4):
            return list(inputs), False
        raise ValueError(f"An image array has 2 to 4 dimensions, got shape {inputs.shape}.")
    if isinstance(inputs, torch.Tensor):
        if inputs.ndim == 2 or (inputs.ndim == 3 and inputs.shape[0] in (1, 3, 4)):
            return [inputs], True
        if inputs.ndim in (3, 4):
            return list(inputs), False
        raise ValueError(f"An image tensor has 2 to 4 dimensions, got shape {tuple(inputs.shape)}.")
    if isinstance(inputs, list | tuple):
        if not inputs:
            raise ValueError("Nothing to predict: the list of images is empty.")
        items: list[Any] = []
        for item in inputs:
            if isinstance(item, str | os.PathLike) and Path(item).is_dir():
                items += predict_items(item)[0]
            elif isinstance(item, str | os.PathLike | Image.Image | np.ndarray | torch.Tensor):
                items.append(str(item) if isinstance(item, os.PathLike) else item)
            else:
                raise TypeError(
                    f"Cannot predict on a {type(item).__name__}; pass image paths, PIL images, arrays or tensors."
                )
        return items, False
    raise TypeError(
        f"Cannot predict on a {type(inputs).__name__}; pass an image path, a folder, a PIL image, an "
        "array, a tensor, or a list of them."
    )
