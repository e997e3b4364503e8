"""What every image task shares at its edges: images in (bytes or base64), an example batch for export."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import torch
from PIL import Image

from flash.image.io import decode_image_bytes


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
