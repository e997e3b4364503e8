"""Object detection in the ``flash`` command: ``flash finetune detection`` and ``flash predict`` inputs.

Imports nothing heavy at module level: see :mod:`flash.cli.domains`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flash.cli import domains
from flash.cli.domains import DomainSpec, Option, register_domain

FORMATS = ("voc", "coco", "csv")


def _detection_data(options: dict[str, Any]) -> Any:
    from flash.image import ObjectDetectionData

    common = {**domains.data_kwargs(options, ("image_size", "on_bad_box")), **domains.loader_kwargs(options)}
    kind = options.get("annotations") or "voc"
    if kind == "voc":
        folders = domains.data_kwargs(options, ("train_folder", "val_folder", "test_folder"))
        files = domains.data_kwargs(options, ("train_file", "val_file", "test_file"))
        if files:
            raise ValueError(
                "VOC annotations are XML files in the folders; --train-file etc. are for --annotations coco or csv."
            )
        return ObjectDetectionData.from_voc(**folders, **common)
    if kind == "coco":
        pairs = {}
        for split in ("train", "val", "test"):
            folder, file = options.get(f"{split}_folder"), options.get(f"{split}_file")
            if (folder is None) != (file is None):
                raise ValueError(
                    f"COCO data needs both --{split}-folder (the images) and --{split}-file (the JSON)."
                )
            if folder is not None:
                pairs[f"{split}_folder"], pairs[f"{split}_ann_file"] = folder, file
        return ObjectDetectionData.from_coco(**pairs, **common)
    return ObjectDetectionData.from_csv(
        **domains.data_kwargs(options, ("train_file", "val_file", "test_file", "images_root")), **common
    )


def _detection_task(options: dict[str, Any], data: Any) -> Any:
    from flash.image import ObjectDetector

    extra = domains.data_kwargs(options, ("head",))
    return ObjectDetector(
        num_classes=data.num_classes, labels=data.labels, **domains.task_kwargs(options, **extra)
    )


def _detection_plots(task: Any, data: Any, folder: Path) -> dict[str, Path]:
    from flash.image.detection.plots import plot_detections

    if data.splits.get("val") is None:
        return {}
    return {"validation detections": plot_detections(task, data, path=folder / "val_detections.png")}


def _detection_inputs(task: Any, inputs: Sequence[str], options: dict[str, Any]) -> tuple[list[str], Any]:
    from flash.image.cli import _image_inputs

    return _image_inputs(task, inputs, options)


DETECTION = register_domain(
    DomainSpec(
        name="detection",
        summary="object detection from images with boxes (Pascal VOC XML, COCO JSON or a CSV file)",
        package="flash.image",
        default_backbone="efficientnet_lite0",
        # the heads start from random weights: one epoch on the frozen backbone, then everything
        default_strategy="freeze_unfreeze:1",
        order=35,
        options=(
            *domains.split_options(
                "folder",
                "training images; for VOC a folder with images/ and annotations/ (or XML files beside the images)",
                "validation images, same layout",
                "test images, same layout",
            ),
            Option("--annotations", "how the boxes are given: voc (default), coco or csv", choices=FORMATS),
            *domains.split_options(
                "file",
                "coco: the training JSON file; csv: a CSV file of image,xmin,ymin,xmax,ymax,label rows",
                "the validation JSON or CSV file",
                "the test JSON or CSV file",
                metavar="FILE",
            ),
            Option(
                "--images-root",
                "csv: folder the image paths are relative to (default: the CSV file's folder)",
                kind="path",
                metavar="DIR",
            ),
            Option(
                "--head",
                "fcos (default), retinanet or faster_rcnn",
                choices=("fcos", "retinanet", "faster_rcnn"),
            ),
            Option(
                "--image-size",
                "longer side of the network's input in pixels (default 512)",
                domains.positive_int,
                metavar="PIXELS",
            ),
            Option(
                "--on-bad-box",
                "error (default): refuse boxes of zero size or outside their image; skip: leave them out",
                choices=("error", "skip"),
            ),
            domains.VAL_SPLIT,
            Option("--batch-size", "images per batch (default 8)", domains.positive_int, metavar="N"),
            domains.NUM_WORKERS,
        ),
        build_data=_detection_data,
        build_task=_detection_task,
        extra_plots=_detection_plots,
        predict_inputs=_detection_inputs,
        predict_help="image files or folders",
        required=(("train_folder", "train_file"),),
        example="flash finetune detection --train-folder bccd/train --val-folder bccd/val --epochs 10",
    )
)
