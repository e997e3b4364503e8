"""Reading images: files, PIL images, arrays and tensors to RGB, with errors that name the file.

Every image becomes 8-bit RGB: grayscale and bilevel images are repeated over three channels,
palette images expanded, transparent images (RGBA, LA, palette with transparency) composited on
white, 16- and 32-bit images scaled to 8 bits, CMYK converted; EXIF orientation is applied.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from flash.core.data.decode_limits import InputTooLargeError, current_decode_limits
from flash.core.utils.validation import check_folder

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
)
"""File name endings treated as images (case-insensitive). Other files in folders are ignored."""

IGNORED_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", ".directory"})


class BadImageError(ValueError):
    """An image that cannot be read; ``path`` names it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"Cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a file whose name ends in one of :data:`IMAGE_EXTENSIONS` (hidden files excluded)."""
    name = os.path.basename(str(path))
    if name.startswith(".") or name.lower() in IGNORED_NAMES:
        return False
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[str]:
    """Image files in ``folder`` (sorted), skipping hidden and non-image files."""
    folder = Path(folder)
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(str(p) for p in pattern if p.is_file() and is_image_file(p))


def predict_folder_images(folder: str | os.PathLike | None) -> list[str] | None:
    """The images under a ``predict_folder`` (recursively), or ``None`` when it is ``None``.

    Raises:
        FileNotFoundError, NotADirectoryError: when it is not an existing folder.
        ValueError: when it holds no images.
    """
    if folder is None:
        return None
    images = list_images(check_folder(folder, "predict_folder"), recursive=True)
    if not images:
        raise ValueError(f"predict_folder {str(folder)!r} holds no images.")
    return images


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_bit_depth_to_rgb(image: Image.Image) -> Image.Image:
    array = np.asarray(image)
    if image.mode == "F":
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        scale = 255.0 / (high - low) if high > low else 0.0
        array8 = np.clip((array - low) * scale, 0, 255).astype(np.uint8)
    else:
        bits = 16 if (image.mode.startswith("I;16") or array.max(initial=0) <= 65535) else 32
        array8 = (array.astype(np.float64) / (2**bits - 1) * 255).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(array8, mode="L").convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB (see the module docstring for what each mode becomes)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "RGBa", "La", "PA") or (mode == "P" and "transparency" in image.info):
        return _composite_on_white(image)
    if mode == "I" or mode.startswith("I;16") or mode == "F":
        return _high_bit_depth_to_rgb(image)
    return image.convert("RGB")


def open_image(path: str | os.PathLike, min_size: int | None = None) -> Image.Image:
    """Decode the image file at ``path`` to RGB.

    Args:
        min_size: when given, a large image may be decoded at a reduced scale as long as its
            short side stays at least this large (JPEG's DCT scaling; other formats are
            reduced by an integer factor right after decoding, keeping at least twice this):
            much faster and smaller for large photos that are resized down anyway.

    The image's size is read from its header and checked against the ``max_image_pixels`` of
    :func:`flash.core.data.decode_limits.current_decode_limits` before it is decoded.

    Raises:
        BadImageError: naming ``path`` when the file is missing, not an image, corrupt,
            truncated or over the pixel limit.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise BadImageError(path, "the file does not exist.")
    try:
        return _decode(path, min_size, "The image")
    except InputTooLargeError as error:
        raise BadImageError(path, str(error)) from None
    except Image.UnidentifiedImageError:
        raise BadImageError(path, "not an image file (or a format Pillow cannot read).") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(path, f"the file is corrupt or truncated ({error}).") from None


def decode_image_bytes(
    data: bytes, fit_size: int | None = None, resample: int = Image.BILINEAR, what: str = "The image"
) -> Image.Image:
    """Decode an image file's bytes to RGB under the decode limits in force.

    The size in the header is checked against ``max_image_pixels`` before decoding; with
    ``fit_size`` the image is decoded at a reduced scale where the format allows and resized
    so that its short side is ``fit_size`` (as :func:`open_image` then the prediction pipeline
    would), and the result counts against ``max_total_pixels``.

    Raises:
        InputTooLargeError: over one of the limits (a ``ValueError`` naming the limit).
        ValueError: when the bytes are not an image Pillow can read, or are truncated.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"decode_image_bytes takes bytes, got {type(data).__name__}.")
    limits = current_decode_limits()
    try:
        image = _decode(io.BytesIO(data), fit_size, what)
    except InputTooLargeError:
        raise
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ValueError(
            "The decoded bytes are not an image Pillow can read (or the image is truncated)."
        ) from None
    if fit_size:
        image = resize_short_side(image, fit_size, resample)
    limits.hold(image.width, image.height, what)
    return image


def _decode(source: Any, min_size: int | None, what: str) -> Image.Image:
    """Open, check the header size against the limits, decode (reduced where possible), to RGB."""
    limits = current_decode_limits()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            opened = Image.open(source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputTooLargeError(
                f"{what} is over Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} pixels "
                f"(and over max_image_pixels={limits.max_image_pixels:,}); send a smaller image.",
                "max_image_pixels",
                limits.max_image_pixels,
            ) from None
        with opened as image:
            if min_size and image.format == "JPEG":
                scale = max(1, min(image.size) // min_size)
                if scale > 1:
                    image.draft("RGB", (image.size[0] // scale, image.size[1] // scale))
            width, height = image.size
            limits.check_image(width, height, what)
            with limits.decoding(width, height):
                image.load()
                image = _reduce(image, min_size)
                image = ImageOps.exif_transpose(image)
                return to_rgb(image)


_REDUCIBLE_MODES = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "I", "F", "CMYK", "PA", "YCbCr"})
REDUCING_GAP = 2
"""An image reduced at decode keeps a short side of at least ``REDUCING_GAP * min_size``, so the
final antialiased resize still has the detail it needs (the reducing gap of Pillow's ``thumbnail``)."""


def _reduce(image: Image.Image, min_size: int | None) -> Image.Image:
    if not min_size:
        return image
    factor = min(image.size) // (REDUCING_GAP * min_size)
    if factor < 2:
        return image
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode not in _REDUCIBLE_MODES:
        image = to_rgb(image)
    return image.reduce(factor)


def resize_short_side(image: Image.Image, size: int, resample: int = Image.BILINEAR) -> Image.Image:
    """``image`` resized (antialiased) so its shorter side is ``size``, keeping its aspect ratio."""
    width, height = image.size
    scale = size / min(width, height)
    if scale == 1:
        return image
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    return image.resize(new, resample)


def image_size_of(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding it.

    Raises:
        BadImageError: for a missing file or one that is not an image.
    """
    path = str(path)
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise BadImageError(path, "the file does not exist.") from None
    except Image.UnidentifiedImageError:
        raise BadImageError(path, "not an image file (or a format Pillow cannot read).") from None
    except Image.DecompressionBombError:
        raise BadImageError(
            path, f"over Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} pixels."
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(path, f"the file is corrupt ({error}).") from None


def array_to_rgb(value: np.ndarray | torch.Tensor, what: str = "image") -> Image.Image:
    """An array or tensor holding one image as an RGB PIL image.

    Accepted: numpy ``(H, W)``, ``(H, W, C)``; torch ``(H, W)``, ``(C, H, W)``; with ``C`` in 1, 3,
    4. Integer pixels are 0-255 (uint16: 0-65535); float pixels 0-1 (or 0-255 when larger than 1).
    """
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu().numpy()
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):  # tensors are channels-first
            array = np.moveaxis(array, 0, -1)
    else:
        array = np.asarray(value)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"{what} has shape {tuple(np.shape(value))}; an image array is (H, W), (H, W, C) or, as a "
            "tensor, (C, H, W) with C = 1, 3 or 4."
        )
    if array.size == 0:
        raise ValueError(f"{what} is empty (shape {tuple(array.shape)}).")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{what} has NaN or infinite pixel values.")
        scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).round().astype(np.uint8)
    elif array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(array))
    return to_rgb(image)


def read_any(item: Any, min_size: int | None = None, what: str = "image") -> Image.Image:
    """A path, PIL image, numpy array or tensor as an RGB PIL image."""
    if isinstance(item, str | os.PathLike):
        return open_image(item, min_size)
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, np.ndarray | torch.Tensor):
        return array_to_rgb(item, what)
    raise TypeError(
        f"{what} is a {type(item).__name__}; expected a file path, a PIL image, a numpy array or a tensor."
    )


def first_lines(errors: Iterable[BadImageError], limit: int = 10) -> str:
    errors = list(errors)
    lines = [f"  {e.path}: {e.reason}" for e in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"  ... and {len(errors) - limit} more")
    return "\n".join(lines)
