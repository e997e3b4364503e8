"""``ObjectDetectionData``: images with boxes from VOC XML, COCO JSON, tables or Python lists."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from flash.core.data.datamodule import DataModule, LabelEncoder, Split
from flash.core.data.splits import hold_out_validation
from flash.core.utils.validation import check_optional_int
from flash.image.dataset import CachedImageItems, DecodedImageCache
from flash.image.detection.annotations import (
    BOX_COLUMNS,
    Annotated,
    read_coco,
    read_table,
    read_targets,
    read_voc,
)
from flash.image.detection.transforms import (
    DetectionCollate,
    DetectionPipeline,
    check_fraction_pair,
    check_probability,
)
from flash.image.io import (
    BadImageError,
    first_lines,
    image_size_of,
    predict_folder_images,
    read_any,
)

DEFAULT_IMAGE_SIZE = 512
"""The longer side of the network's input by default."""

BAD_BOX_POLICIES = ("error", "skip")


def check_boxes(items: list[Annotated], what: str, on_bad_box: str) -> list[Annotated]:
    """Clip boxes that stick out of their image (counted in a warning); refuse (``"error"``) or
    drop with a warning (``"skip"``) boxes with no area inside the image."""
    clipped, bad = 0, []
    for item in items:
        if not len(item.boxes):
            continue
        if isinstance(item.image, str):
            try:
                width, height = image_size_of(item.image)
            except BadImageError as error:
                raise ValueError(f"{what}: {error}") from None
        else:
            width, height = read_any(item.image, what=f"{what} image").size
        boxes = item.boxes
        inside = boxes.copy()
        inside[:, [0, 2]] = inside[:, [0, 2]].clip(0, width)
        inside[:, [1, 3]] = inside[:, [1, 3]].clip(0, height)
        empty = (inside[:, 2] <= inside[:, 0]) | (inside[:, 3] <= inside[:, 1])
        moved = ~empty & (inside != boxes).any(axis=1)
        clipped += int(moved.sum())
        for k in np.flatnonzero(empty):
            bad.append(
                f"  {item.source or item.image}: {item.labels[k]!r} box {boxes[k].tolist()} "
                f"(image {width}x{height})"
            )
        if empty.any():
            keep = ~empty
            item.labels = [label for label, k in zip(item.labels, keep) if k]
            inside = inside[keep]
        item.boxes = inside
    if bad:
        shown = "\n".join(bad[:10]) + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else "")
        message = (
            f"{len(bad)} {what} box(es) have zero or negative size, or lie outside their image:\n{shown}"
        )
        if on_bad_box == "error":
            raise ValueError(message + "\nFix them, or pass on_bad_box='skip' to leave them out.")
        warnings.warn(message + "\nThey are left out.", stacklevel=4)
    if clipped:
        warnings.warn(
            f"{clipped} {what} box(es) stick out of their image and were clipped to it.", stacklevel=4
        )
    return items


class DetectionDataset(CachedImageItems):
    """Items ``{"index", "input", "size", "target"?}`` of one split (see :class:`DetectionCollate`)."""

    pipeline: DetectionPipeline

    def __init__(self, *items: Any, sizes: dict[Any, tuple[int, int]] | None = None) -> None:
        """``inputs, targets, pipeline, cache, stage`` as for :class:`CachedImageItems`; ``sizes``:
        the original sizes of images already in ``cache`` (shared between a split's datasets)."""
        super().__init__(*items)
        self.sizes = {} if sizes is None else sizes
        """Original ``(height, width)`` of the images in ``cache``, by the same keys."""

    def load(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """The resized image of item ``index`` and its original ``(height, width)``."""
        key = self._key(index)
        if self.cache is not None and key in self.sizes:
            cached = self.cache.get(key)
            if cached is not None:
                return cached, self.sizes[key]
        array, size = self.pipeline.load(self.inputs[index], what=f"{self.stage} item {index}")
        if self.cache is not None and self.cache.put(key, array):
            self.sizes[key] = size
        return array, size

    def __getitem__(self, index: int) -> dict[str, Any]:
        array, size = self.load(index)
        item: dict[str, Any] = {"index": index, "size": size}
        if self.targets is None:
            item["input"], _, _ = self.pipeline(array, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
            return item
        target = self.targets[index]
        scale = np.array([array.shape[1] / size[1], array.shape[0] / size[0]] * 2, dtype=np.float32)
        boxes = target["boxes"] * scale
        image, boxes, labels = self.pipeline(array, boxes, target["labels"])
        item["input"] = image
        item["target"] = {"boxes": boxes, "labels": labels}
        return item

    def prefill(self, threads: int | None = None) -> None:
        """Decode every image into the cache on a thread pool; list every unreadable one."""
        if self.cache is None:
            return
        errors: list[BadImageError] = []

        def decode(index: int) -> None:
            try:
                self.load(index)
            except BadImageError as error:
                errors.append(error)

        with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(decode, range(len(self))))
        if errors:
            raise ValueError(f"{len(errors)} {self.stage} image(s) cannot be read:\n{first_lines(errors)}")


class ObjectDetectionData(DataModule):
    """Images and their boxes for :class:`~flash.image.ObjectDetector`.

    Build it with a ``from_*`` constructor. Class names come from the training annotations;
    ``num_classes`` and ``labels`` travel to the task. Images without boxes are allowed: they are
    negatives, teaching the detector what background looks like.

    Boxes are checked before training: one that sticks out of its image is clipped to it (a
    warning counts them); one with zero or negative size, or entirely outside its image, is an
    error naming its file (``on_bad_box="skip"`` leaves such boxes out with a warning instead).

    Args:
        image_size: the longer side of the network's input in pixels (default 512; images keep
            their aspect ratio).
        crop_scale: area range of the random scale-crop in training (a zoom into part of the
            image; boxes move with it); ``(1, 1)`` turns it off.
        hflip, vflip: probabilities of random horizontal and vertical flips in training.
        on_bad_box: ``"error"`` or ``"skip"`` (see above).
        cache_mb: memory bound of the decoded-image cache (default a quarter of RAM, at most
            4 GiB; ``0`` turns it off).
        batch_size: images per batch (default 8).
        num_workers, seed: see :class:`flash.core.data.datamodule.DataModule`.
    """

    default_batch_size = 8

    def __init__(
        self,
        *splits: Split | None,
        labels: Sequence[Any] | None = None,
        image_size: int | None = None,
        crop_scale: Sequence[float] = (1.0, 1.0),
        hflip: float = 0.5,
        vflip: float = 0.0,
        cache_mb: float | None = None,
        **loading: Any,
    ) -> None:
        super().__init__(*splits, labels=labels, **loading)
        check_optional_int(image_size, "image_size", 32, "pixels")
        self.image_size = image_size
        self.crop_scale = check_fraction_pair(crop_scale, "crop_scale")
        self.hflip, self.vflip = check_probability(hflip, "hflip"), check_probability(vflip, "vflip")
        self.cache = DecodedImageCache.of_size(cache_mb)
        self._sizes: dict[Any, tuple[int, int]] = {}
        self.preprocessing: dict[str, Any] = {
            "image_size": image_size or DEFAULT_IMAGE_SIZE,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
        }
        self.channels_last = True

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def _from_annotated(
        cls,
        train: list[Annotated] | None,
        val: list[Annotated] | None,
        test: list[Annotated] | None,
        predict: list[Any] | None,
        val_split: float | None,
        on_bad_box: str = "error",
        **kwargs: Any,
    ) -> ObjectDetectionData:
        """Check boxes, encode class names with the training labels and hold out ``val_split``:
        the one path every constructor takes."""
        if on_bad_box not in BAD_BOX_POLICIES:
            raise ValueError(f"on_bad_box must be one of {BAD_BOX_POLICIES}, got {on_bad_box!r}.")
        labels = kwargs.pop("labels", None)
        encoder = None
        if labels is not None:
            encoder = LabelEncoder(list(labels))
        elif train is not None:
            names = [label for item in train for label in item.labels]
            if not names:
                raise ValueError(
                    "The training annotations hold no boxes: a detector needs some to learn from."
                )
            encoder = LabelEncoder.fit(names, what="train")
        splits: dict[str, Split | None] = {"train": None, "val": None, "test": None}
        for name, items in (("train", train), ("val", val), ("test", test)):
            if items is None:
                continue
            if not items:
                raise ValueError(f"The {name} data holds no images.")
            if encoder is None:
                raise ValueError(f"{name} data needs training data (or labels=) to define the classes.")
            items = check_boxes(items, name, on_bad_box)
            known = {LabelEncoder._key(x) for x in encoder.labels}
            unknown: dict[str, str] = {}
            for item in items:
                for label in item.labels:
                    if LabelEncoder._key(label) not in known:
                        unknown.setdefault(str(label), str(item.source or item.image))
            if unknown:
                shown = ", ".join(f"{k!r} (e.g. in {v})" for k, v in list(unknown.items())[:10])
                raise ValueError(
                    f"The {name} annotations name class(es) the training annotations never do: {shown}. "
                    f"Training classes: {', '.join(map(str, encoder.labels))}. Every class needs training boxes."
                )
            targets = np.empty(len(items), dtype=object)
            for i, item in enumerate(items):
                encoded = encoder.encode(item.labels, name) if item.labels else np.zeros(0, np.int64)
                targets[i] = {"boxes": item.boxes.astype(np.float32), "labels": encoded.astype(np.int64)}
            splits[name] = Split([item.image for item in items], targets)
        hold_out_validation(splits, val_split, kwargs.get("seed", 42))
        return cls(
            splits["train"],
            splits["val"],
            splits["test"],
            Split(list(predict)) if predict is not None else None,
            labels=encoder.labels if encoder is not None else None,
            **kwargs,
        )

    @classmethod
    def from_voc(
        cls,
        train_folder: str | os.PathLike | None = None,
        train_ann_folder: str | os.PathLike | None = None,
        val_folder: str | os.PathLike | None = None,
        val_ann_folder: str | os.PathLike | None = None,
        test_folder: str | os.PathLike | None = None,
        test_ann_folder: str | os.PathLike | None = None,
        predict_folder: str | os.PathLike | None = None,
        *,
        val_split: float | None = None,
        **kwargs: Any,
    ) -> ObjectDetectionData:
        """Pascal VOC XML annotations, one ``.xml`` file per image.

        Each ``*_folder`` holds ``images/`` and ``annotations/`` subfolders (``JPEGImages/`` and
        ``Annotations/`` also work), or the images themselves with the XML files beside them or in
        ``*_ann_folder``. An XML file's ``<filename>`` names its image (else its own name does);
        an XML file without ``<object>`` is an image without boxes. Images without an XML file are
        left out with a warning.

        Args:
            train_folder, val_folder, test_folder: the splits' folders.
            train_ann_folder, val_ann_folder, test_ann_folder: their XML files, when elsewhere.
            predict_folder: a folder of images to predict on.
            val_split: fraction of the training images held out for validation.
            **kwargs: ``labels``, ``on_bad_box``, ``image_size``, ``batch_size``, ... (see the class).

        Raises:
            FileNotFoundError: a folder that does not exist or holds no XML files.
            ValueError: malformed XML (file and line named), an annotation naming a missing image,
                validation or test classes that training lacks, bad boxes.
        """
        splits = {}
        for name, folder, ann in (
            ("train", train_folder, train_ann_folder),
            ("val", val_folder, val_ann_folder),
            ("test", test_folder, test_ann_folder),
        ):
            splits[name] = read_voc(folder, ann, f"{name}_folder") if folder is not None else None
        return cls._from_annotated(
            splits["train"],
            splits["val"],
            splits["test"],
            predict_folder_images(predict_folder),
            val_split,
            **kwargs,
        )

    from_folders = from_voc

    @classmethod
    def from_coco(
        cls,
        train_folder: str | os.PathLike | None = None,
        train_ann_file: str | os.PathLike | None = None,
        val_folder: str | os.PathLike | None = None,
        val_ann_file: str | os.PathLike | None = None,
        test_folder: str | os.PathLike | None = None,
        test_ann_file: str | os.PathLike | None = None,
        predict_folder: str | os.PathLike | None = None,
        *,
        val_split: float | None = None,
        **kwargs: Any,
    ) -> ObjectDetectionData:
        """COCO detection annotations: a JSON file per split (``images``, ``annotations`` with
        ``bbox`` as ``[x, y, width, height]``, ``categories``) and the folder of its images.
        Crowd annotations are left out; images without annotations are images without boxes.

        Raises:
            ValueError: malformed JSON (line named), an annotation naming a missing image or
                category, an image file that does not exist, unknown classes, bad boxes.
        """
        splits = {}
        for name, folder, ann in (
            ("train", train_folder, train_ann_file),
            ("val", val_folder, val_ann_file),
            ("test", test_folder, test_ann_file),
        ):
            if (folder is None) != (ann is None):
                raise ValueError(f"Pass both {name}_folder and {name}_ann_file, or neither.")
            splits[name] = read_coco(folder, ann, name) if folder is not None else None
        return cls._from_annotated(
            splits["train"],
            splits["val"],
            splits["test"],
            predict_folder_images(predict_folder),
            val_split,
            **kwargs,
        )

    @classmethod
    def from_data_frame(
        cls,
        input_field: str = "image",
        target_field: str = "label",
        train_data_frame: Any = None,
        val_data_frame: Any = None,
        test_data_frame: Any = None,
        predict_folder: str | os.PathLike | None = None,
        *,
        box_fields: Sequence[str] = BOX_COLUMNS,
        images_root: str | os.PathLike | None = None,
        val_split: float | None = None,
        **kwargs: Any,
    ) -> ObjectDetectionData:
        """Data frames with one row per box: the image's path, ``xmin``, ``ymin``, ``xmax``,
        ``ymax`` (pixels) and the class. A row whose box and class are empty is an image without
        boxes.

        Args:
            input_field: the column of image paths (relative to ``images_root``).
            target_field: the column of class names.
            box_fields: the four box columns, in the order xmin, ymin, xmax, ymax.
            images_root: the folder image paths are relative to.
        """
        root = Path(images_root) if images_root is not None else None
        splits = {}
        for name, frame in (("train", train_data_frame), ("val", val_data_frame), ("test", test_data_frame)):
            splits[name] = (
                read_table(frame, input_field, target_field, box_fields, root, f"{name}_data_frame")
                if frame is not None
                else None
            )
        return cls._from_annotated(
            splits["train"],
            splits["val"],
            splits["test"],
            predict_folder_images(predict_folder),
            val_split,
            **kwargs,
        )

    @classmethod
    def from_csv(
        cls,
        input_field: str = "image",
        target_field: str = "label",
        train_file: str | os.PathLike | None = None,
        val_file: str | os.PathLike | None = None,
        test_file: str | os.PathLike | None = None,
        predict_folder: str | os.PathLike | None = None,
        *,
        box_fields: Sequence[str] = BOX_COLUMNS,
        images_root: str | os.PathLike | None = None,
        val_split: float | None = None,
        **kwargs: Any,
    ) -> ObjectDetectionData:
        """CSV files with one row per box, as :meth:`from_data_frame`; image paths are relative
        to ``images_root`` (default: each CSV file's folder). Errors name the file and row."""
        import pandas as pd

        splits = {}
        for name, path in (("train", train_file), ("val", val_file), ("test", test_file)):
            if path is None:
                splits[name] = None
                continue
            if not Path(path).is_file():
                raise FileNotFoundError(f"{name}_file {str(path)!r} does not exist.")
            try:
                frame = pd.read_csv(path)
            except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
                raise ValueError(f"{path}: not a readable CSV file ({str(error).splitlines()[0]}).") from None
            root = Path(images_root) if images_root is not None else Path(path).parent
            splits[name] = read_table(frame, input_field, target_field, box_fields, root, str(path))
        return cls._from_annotated(
            splits["train"],
            splits["val"],
            splits["test"],
            predict_folder_images(predict_folder),
            val_split,
            **kwargs,
        )

    @classmethod
    def from_files(
        cls,
        train_files: Sequence[Any] | None = None,
        train_targets: Sequence[dict[str, Any]] | None = None,
        val_files: Sequence[Any] | None = None,
        val_targets: Sequence[dict[str, Any]] | None = None,
        test_files: Sequence[Any] | None = None,
        test_targets: Sequence[dict[str, Any]] | None = None,
        predict_files: Sequence[Any] | None = None,
        *,
        val_split: float | None = None,
        **kwargs: Any,
    ) -> ObjectDetectionData:
        """Image paths (or arrays, PIL images) with one target per image:
        ``{"boxes": [[xmin, ymin, xmax, ymax], ...], "labels": [name, ...]}`` (empty lists for an
        image without boxes)."""
        splits = {}
        for name, files, targets in (
            ("train", train_files, train_targets),
            ("val", val_files, val_targets),
            ("test", test_files, test_targets),
        ):
            splits[name] = read_targets(files, targets, name) if files is not None else None
        predict = None
        if predict_files is not None:
            predict = [str(f) if isinstance(f, os.PathLike) else f for f in predict_files]
            if not predict:
                raise ValueError("predict_files is empty.")
        return cls._from_annotated(
            splits["train"], splits["val"], splits["test"], predict, val_split, **kwargs
        )

    # -- the task's preprocessing ---------------------------------------------------------------
    def attach_task(self, task: Any) -> None:
        """Take the task's image size and normalisation (the data's ``image_size`` wins if given)."""
        super().attach_task(task)
        preprocessing = getattr(task, "preprocessing", None)
        if preprocessing:
            self.preprocessing = dict(preprocessing)
            if self.image_size is not None:
                self.preprocessing["image_size"] = self.image_size
                if hasattr(task, "set_image_size"):
                    task.set_image_size(self.image_size)
        self.channels_last = bool(getattr(task, "channels_last", True))

    # -- datasets and loaders -------------------------------------------------------------------
    def pipeline(self, stage: str) -> DetectionPipeline:
        """The resizing (and, for training, augmentation) of ``stage``."""
        return DetectionPipeline(
            self.preprocessing["image_size"], stage == "train", self.crop_scale, self.hflip, self.vflip
        )

    def make_dataset(self, split: Split, stage: str) -> DetectionDataset:
        dataset = DetectionDataset(
            split.inputs, split.targets, self.pipeline(stage), self.cache, stage, sizes=self._sizes
        )
        dataset.prefill()
        return dataset

    def collate_fn(self, stage: str) -> DetectionCollate:
        return DetectionCollate(self.preprocessing["mean"], self.preprocessing["std"], self.channels_last)


__all__ = ["ObjectDetectionData"]
