"""Tiny image files of every kind the device input path meets, made fresh for each test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def smooth_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, structured RGB picture (gradients and a disc), so resamplers agree closely."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    disc = ((y - cy) ** 2 + (x - cx) ** 2 < (0.25 * min(height, width)) ** 2).astype(np.float32)
    red = 255 * x / max(width - 1, 1)
    green = 255 * y / max(height - 1, 1)
    blue = 60 + 150 * disc
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)


def write_image(path: Path, height: int = 48, width: int = 64, mode: str = "RGB", seed: int = 0) -> Path:
    """Save a picture in ``mode`` with the format the suffix names (``.jpg``, ``.png``, ``.gif``)."""
    image = Image.fromarray(smooth_rgb(height, width, seed)).convert(mode)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF"}[path.suffix.lower()]
    options = {"quality": 95} if fmt == "JPEG" else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **options)
    return path


def image_folder(
    root: Path, count: int = 6, size: tuple[int, int] = (48, 64)
) -> tuple[list[Path], np.ndarray]:
    """``count`` JPEGs of varied sizes and their class indices (0/1)."""
    paths, targets = [], []
    for i in range(count):
        height, width = size[0] + 7 * i, size[1] - 3 * i
        paths.append(write_image(root / f"img{i}.jpg", height, width, seed=i))
        targets.append(i % 2)
    return paths, np.array(targets, dtype=np.int64)
