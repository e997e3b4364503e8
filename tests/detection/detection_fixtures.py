"""Tiny generated images with boxes: coloured squares on grey, in the layouts the readers take."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 40, 40), "blue": (40, 40, 220)}


def make_images(
    folder: Path, n: int, seed: int = 0, sizes=((96, 64), (64, 80))
) -> list[tuple[str, list, list]]:
    """``n`` PNG images (alternating sizes, width x height), each with one or two squares;
    returns ``(path, boxes, labels)`` per image."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        width, height = sizes[i % len(sizes)]
        pixels = np.full((height, width, 3), 128, np.uint8)
        boxes, labels = [], []
        for k in range(1 + i % 2):
            side = int(rng.integers(14, 22))
            x0, y0 = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            name = "red" if (i + k) % 3 else "blue"
            pixels[y0 : y0 + side, x0 : x0 + side] = COLOURS[name]
            boxes.append([x0, y0, x0 + side, y0 + side])
            labels.append(name)
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(pixels).save(path)
        items.append((str(path), boxes, labels))
    return items


def voc_xml(filename: str, width: int, height: int, boxes, labels) -> str:
    objects = "".join(
        f"<object><name>{label}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for b, label in zip(boxes, labels)
    )
    return (
        f"<annotation><filename>{filename}</filename><size><width>{width}</width>"
        f"<height>{height}</height><depth>3</depth></size>{objects}</annotation>"
    )


def write_voc(root: Path, n: int, seed: int = 0) -> Path:
    """``root/images/*.png`` and ``root/annotations/*.xml`` (the BCCD layout)."""
    items = make_images(root / "images", n, seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for path, boxes, labels in items:
        with Image.open(path) as image:
            width, height = image.size
        xml = voc_xml(Path(path).name, width, height, boxes, labels)
        (root / "annotations" / f"{Path(path).stem}.xml").write_text(xml)
    return root
