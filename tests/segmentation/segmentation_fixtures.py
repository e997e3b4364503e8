"""Tiny segmentation data written by the tests: images whose right part is red (class 1) on a
blue background (class 0), a void border (class 255 or a chosen value), masks as PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (64, 48)  # width, height


def pair(seed: int, size: tuple[int, int] = SIZE, void: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """An (H, W, 3) uint8 image and its (H, W) uint8 mask."""
    rng = np.random.default_rng(seed)
    width, height = size
    split = int(rng.integers(width // 3, 2 * width // 3))
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = (40, 40, 200)
    image[:, split:] = (210, 40, 40)
    image = np.clip(image.astype(int) + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[:, split:] = 1
    mask[:2] = void
    return image, mask


def arrays(n: int, seed: int = 0, void: int = 255) -> tuple[np.ndarray, np.ndarray]:
    pairs = [pair(seed + i, void=void) for i in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def write_split(root: Path, split: str, n: int, seed: int = 0, void: int = 255) -> tuple[Path, Path]:
    """``root/<split>/images/<i>.jpg`` and ``root/<split>/masks/<i>.png``."""
    images, masks = root / split / "images", root / split / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, mask = pair(seed + i, void=void)
        Image.fromarray(image).save(images / f"{i:03d}.jpg", quality=95)
        Image.fromarray(mask).save(masks / f"{i:03d}.png")
    return images, masks


def write_dataset(
    root: Path, n_train: int = 8, n_val: int = 4, void: int = 255, classes: bool = True
) -> Path:
    write_split(root, "train", n_train, 0, void)
    write_split(root, "val", n_val, 100, void)
    if classes:
        (root / "classes.txt").write_text("background\nred\n", encoding="utf-8")
    return root
