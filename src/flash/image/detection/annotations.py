"""Reading box annotations: Pascal VOC XML, COCO JSON, tables with one row per box, Python lists.

Every reader returns :class:`Annotated` images: an image (a path, or an array/PIL image) with its
boxes as ``(xmin, ymin, xmax, ymax)`` in the image's pixels and a class name per box. An image
with no boxes is a negative (it teaches the detector what background looks like).

Errors name the file and, where there is one, the line (XML and JSON) or row (tables).
"""

from __future__ import annotations

import json
import math
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flash.core.utils.validation import check_folder
from flash.image.io import IMAGE_EXTENSIONS, list_images

BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class Annotated:
    """One image and its boxes.

    Attributes:
        image: the image file's path (or an in-memory image).
        boxes: ``(K, 4)`` float array of ``xmin, ymin, xmax, ymax`` in the image's pixels.
        labels: the class name of each box.
        source: where the annotation came from (a file, ``file:line``), for error messages.
    """

    image: Any
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.float32))
    labels: list[Any] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        if len(self.labels) != len(self.boxes):
            raise ValueError(
                f"{self.source or self.image}: {len(self.boxes)} boxes but {len(self.labels)} labels."
            )


class AnnotationError(ValueError):
    """An annotation file or row that cannot be read; the message names it."""


def find_image(folder: Path, name: str, stem: str) -> Path | None:
    """The image ``name`` in ``folder``, else an image named ``stem`` with any image extension."""
    if name:
        candidate = folder / Path(name).name
        if candidate.is_file():
            return candidate
    for extension in IMAGE_EXTENSIONS:
        for suffix in (extension, extension.upper()):
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


# -- Pascal VOC --------------------------------------------------------------------------------
def voc_folders(folder: Any, ann_folder: Any, what: str) -> tuple[Path, Path]:
    """The images folder and the annotations folder of a VOC data set.

    ``folder`` may hold ``images/`` (or ``JPEGImages/``) and ``annotations/`` (or ``Annotations/``);
    otherwise it holds the images, and the XML files sit beside them unless ``ann_folder`` is given.
    """
    root = check_folder(folder, what)
    if ann_folder is not None:
        return root, check_folder(ann_folder, f"{what.replace('folder', 'ann_folder')}")
    images = next((root / n for n in ("images", "JPEGImages") if (root / n).is_dir()), None)
    annotations = next((root / n for n in ("annotations", "Annotations") if (root / n).is_dir()), None)
    if images is not None and annotations is not None:
        return images, annotations
    return root, root


def _xml_text(node: ET.Element, tag: str, path: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise AnnotationError(f"{path}: an <object> lacks <{tag}>.")
    return child.text.strip()


def _xml_number(box: ET.Element, tag: str, path: Path, name: str) -> float:
    text = _xml_text(box, tag, path)
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(f"{path}: the <{tag}> of a {name!r} box is {text!r}, not a number.") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{path}: the <{tag}> of a {name!r} box is {text!r}.")
    return value


def read_voc_file(path: Path, images: Path) -> Annotated:
    """One Pascal VOC XML file; its ``<filename>`` (or its own name) names the image in ``images``."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        line, column = error.position
        raise AnnotationError(f"{path}, line {line}, column {column}: malformed XML ({error.msg}).") from None
    if root.tag != "annotation":
        raise AnnotationError(f"{path}: not a Pascal VOC annotation (the root element is <{root.tag}>).")
    filename = (root.findtext("filename") or "").strip()
    image = find_image(images, filename, path.stem)
    if image is None:
        named = f"image {filename!r}" if filename else f"an image named {path.stem}.*"
        raise AnnotationError(f"{path} names {named}, which {images} does not hold.")
    boxes, labels = [], []
    for node in root.findall("object"):
        name = _xml_text(node, "name", path)
        box = node.find("bndbox")
        if box is None:
            raise AnnotationError(f"{path}: the {name!r} object has no <bndbox>.")
        boxes.append([_xml_number(box, tag, path, name) for tag in BOX_COLUMNS])
        labels.append(name)
    return Annotated(str(image), np.asarray(boxes, dtype=np.float32), labels, str(path))


def read_voc(folder: Any, ann_folder: Any = None, what: str = "train_folder") -> list[Annotated]:
    """Every ``*.xml`` annotation of a VOC folder (sorted); images without one are left out, with a warning."""
    images, annotations = voc_folders(folder, ann_folder, what)
    files = sorted(
        p for p in annotations.iterdir() if p.suffix.lower() == ".xml" and not p.name.startswith(".")
    )
    if not files:
        raise FileNotFoundError(
            f"{what} {str(folder)!r}: no .xml annotation files in {annotations}. Expected images/ and "
            "annotations/ subfolders, or images with an .xml file of the same name beside each."
        )
    items = [read_voc_file(path, images) for path in files]
    annotated = {Path(item.image).resolve() for item in items}
    unannotated = [p for p in list_images(images) if Path(p).resolve() not in annotated]
    if unannotated:
        warnings.warn(
            f"{what}: {len(unannotated)} image(s) in {images} have no annotation file and are left out "
            f"(e.g. {Path(unannotated[0]).name}). An image without boxes needs an XML file without <object>.",
            stacklevel=3,
        )
    return items


# -- COCO --------------------------------------------------------------------------------------
def read_coco(folder: Any, ann_file: Any, what: str = "train") -> list[Annotated]:
    """A COCO detection JSON file: ``images``, ``annotations`` (``bbox`` as ``[x, y, width, height]``)
    and ``categories``. Crowd annotations (``iscrowd: 1``) are left out; images without
    annotations are negatives."""
    images = check_folder(folder, f"{what}_folder")
    if not isinstance(ann_file, str | os.PathLike) or not Path(ann_file).is_file():
        raise FileNotFoundError(f"{what}_ann_file {ann_file!r} is not an existing file.")
    path = Path(ann_file)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AnnotationError(
            f"{path}, line {error.lineno}, column {error.colno}: malformed JSON ({error.msg})."
        ) from None
    if not isinstance(content, dict) or not {"images", "annotations", "categories"} <= set(content):
        raise AnnotationError(f"{path}: a COCO file holds 'images', 'annotations' and 'categories'.")
    try:
        categories = {c["id"]: str(c["name"]) for c in content["categories"]}
        entries = {int(i["id"]): i for i in content["images"]}
    except (KeyError, TypeError, ValueError) as error:
        raise AnnotationError(
            f"{path}: every category needs id and name, every image id and file_name ({error})."
        ) from None
    boxes: dict[int, list[list[float]]] = {k: [] for k in entries}
    labels: dict[int, list[str]] = {k: [] for k in entries}
    for number, ann in enumerate(content["annotations"]):
        where = f"{path}: annotation {number} (id {ann.get('id', '?')})"
        if ann.get("iscrowd", 0):
            continue
        if ann.get("image_id") not in entries:
            raise AnnotationError(f"{where} names image_id {ann.get('image_id')!r}, which 'images' lacks.")
        if ann.get("category_id") not in categories:
            raise AnnotationError(
                f"{where} names category_id {ann.get('category_id')!r}, which 'categories' lacks."
            )
        bbox = ann.get("bbox")
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox
            )
        ):
            raise AnnotationError(f"{where}: bbox {bbox!r} is not [x, y, width, height].")
        x, y, w, h = (float(v) for v in bbox)
        boxes[ann["image_id"]].append([x, y, x + w, y + h])
        labels[ann["image_id"]].append(categories[ann["category_id"]])
    items = []
    for key, entry in entries.items():
        name = str(entry.get("file_name", ""))
        image = images / name
        if not name or not image.is_file():
            raise AnnotationError(
                f"{path}: image id {key} names file {name!r}, which {images} does not hold."
            )
        items.append(Annotated(str(image), np.asarray(boxes[key], dtype=np.float32), labels[key], str(path)))
    return items


# -- tables ------------------------------------------------------------------------------------
def read_table(
    frame: Any,
    input_field: str,
    target_field: str,
    box_fields: Sequence[str],
    images_root: Path | None,
    what: str,
) -> list[Annotated]:
    """Rows of a data frame, one per box (rows of one image are grouped, in first-seen order). A
    row whose box and label cells are empty is an image without boxes."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}.")
    if len(box_fields) != 4:
        raise ValueError(f"box_fields names the 4 columns xmin, ymin, xmax, ymax; got {list(box_fields)}.")
    needed = [input_field, target_field, *box_fields]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} lacks the column(s) {', '.join(map(repr, missing))}; it has {', '.join(map(str, frame.columns))}."
        )
    grouped: dict[str, Annotated] = {}
    for row, record in enumerate(frame[needed].itertuples(index=False, name=None)):
        where = f"{what}, row {row + 1}"
        name, label, *coords = record
        if not isinstance(name, str | os.PathLike) or not str(name).strip():
            raise AnnotationError(f"{where}: {name!r} is not an image path.")
        image = Path(str(name).strip())
        if images_root is not None and not image.is_absolute():
            image = images_root / image
        key = str(image)
        if key not in grouped:
            if not image.is_file():
                raise AnnotationError(
                    f"{where} names image {str(name)!r}, which does not exist (looked for {image}). "
                    "Pass images_root= if the paths are relative to another folder."
                )
            grouped[key] = Annotated(key, source=what)
        empty = [pd.isna(v) or (isinstance(v, str) and not v.strip()) for v in (label, *coords)]
        if all(empty):
            continue  # an image without boxes
        if any(empty):
            blank = [c for c, e in zip((target_field, *box_fields), empty) if e]
            raise AnnotationError(
                f"{where}: {', '.join(blank)} empty; give a box and its label, or leave all five empty."
            )
        try:
            box = [float(v) for v in coords]
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: box {coords!r} holds something that is not a number.") from None
        if not all(math.isfinite(v) for v in box):
            raise AnnotationError(f"{where}: box {coords!r} is not finite.")
        entry = grouped[key]
        entry.boxes = np.concatenate([entry.boxes, np.asarray([box], dtype=np.float32)])
        entry.labels.append(label.strip() if isinstance(label, str) else label)
    if not grouped:
        raise ValueError(f"{what} has no rows.")
    return list(grouped.values())


# -- Python lists ------------------------------------------------------------------------------
def read_targets(files: Iterable[Any], targets: Sequence[Any], what: str) -> list[Annotated]:
    """Images with targets ``{"boxes": [[xmin, ymin, xmax, ymax], ...], "labels": [...]}``."""
    if isinstance(files, str | os.PathLike):
        raise TypeError(f"{what}_files must be a list of image paths, not one path {str(files)!r}.")
    files = list(files)
    if targets is None:
        raise ValueError(f"{what}_files need {what}_targets: one {{'boxes': ..., 'labels': ...}} per image.")
    targets = list(targets)
    if len(files) != len(targets):
        raise ValueError(f"{len(files)} {what} images but {len(targets)} {what} targets.")
    items = []
    for i, (image, target) in enumerate(zip(files, targets)):
        where = f"{what}_targets[{i}]"
        if isinstance(image, str | os.PathLike) and not Path(image).is_file():
            raise FileNotFoundError(f"{what}_files[{i}] {str(image)!r} does not exist.")
        if not isinstance(target, dict) or not {"boxes", "labels"} <= set(target):
            raise AnnotationError(f"{where} must be a dict with 'boxes' and 'labels', got {target!r:.80}.")
        try:
            boxes = np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4)
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: boxes must be a list of [xmin, ymin, xmax, ymax].") from None
        labels = list(target["labels"])
        if len(labels) != len(boxes):
            raise AnnotationError(f"{where}: {len(boxes)} boxes but {len(labels)} labels.")
        if not np.isfinite(boxes).all():
            raise AnnotationError(f"{where}: a box is NaN or infinite.")
        source = str(image) if isinstance(image, str | os.PathLike) else where
        items.append(
            Annotated(str(image) if isinstance(image, os.PathLike) else image, boxes, labels, source)
        )
    return items
