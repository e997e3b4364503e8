"""Tiny image data sets written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 40, 40), "blue": (40, 40, 220), "green": (40, 200, 40)}


def colour_image(
    colour: tuple[int, int, int], size: tuple[int, int] = (40, 32), seed: int = 0
) -> Image.Image:
    """A smoothly shaded image of one colour (JPEG noise cannot turn it into another colour)."""
    rng = np.random.default_rng(seed)
    width, height = size
    shade = np.linspace(-25, 25, width)[None, :, None] + rng.uniform(-10, 10)
    pixels = np.clip(np.array(colour)[None, None, :] + shade, 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(pixels, height, axis=0))


def make_class_folders(
    root: str | Path,
    classes: dict[str, tuple[int, int, int]] | None = None,
    per_class: int = 4,
    splits: tuple[str, ...] = ("train", "val"),
    suffix: str = ".jpg",
    size: tuple[int, int] = (40, 32),
) -> Path:
    """``root/<split>/<class>/<i><suffix>`` for every split and class; returns ``root``."""
    root = Path(root)
    classes = classes or {"red": COLOURS["red"], "blue": COLOURS["blue"]}
    for s, split in enumerate(splits):
        for c, (name, colour) in enumerate(classes.items()):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                colour_image(colour, size, seed=100 * s + 10 * c + i).save(folder / f"{i}{suffix}")
    return root


def image_files(folder: str | Path) -> list[str]:
    return sorted(str(p) for p in Path(folder).rglob("*") if p.suffix in (".jpg", ".png"))
