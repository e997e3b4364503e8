"""Semantic segmentation in the ``flash`` command: ``flash finetune segmentation`` and ``flash predict`` inputs.

Imports nothing heavy at module level: see :mod:`flash.cli.domains`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flash.cli import domains
from flash.cli.domains import DomainSpec, Option, register_domain

HEAD_CHOICES = ("fpn", "unet")
LOSS_CHOICES = ("cross_entropy", "dice", "cross_entropy+dice")


def _segmentation_data(options: dict[str, Any]) -> Any:
    from flash.image import SemanticSegmentationData

    return SemanticSegmentationData.from_folders(
        **domains.data_kwargs(
            options,
            (
                "train_folder",
                "train_target_folder",
                "val_folder",
                "val_target_folder",
                "test_folder",
                "test_target_folder",
                "num_classes",
                "ignore_index",
                "image_size",
            ),
        ),
        **domains.loader_kwargs(options),
    )


def _segmentation_task(options: dict[str, Any], data: Any) -> Any:
    from flash.image import SemanticSegmentation

    return SemanticSegmentation(
        num_classes=data.num_classes,
        labels=data.labels,
        ignore_index=data.ignore_index,
        **domains.data_kwargs(options, ("head", "loss")),
        **domains.task_kwargs(options),
    )


def _segmentation_plots(task: Any, data: Any, folder: Path) -> dict[str, Path]:
    from flash.image.segmentation.plots import plot_class_iou, plot_predictions

    if data.splits.get("val") is None:
        return {}
    return {
        "validation masks": plot_predictions(task, data, path=folder / "val_masks.png"),
        "IoU per class": plot_class_iou(task, data, path=folder / "class_iou.png"),
    }


def _segmentation_inputs(task: Any, inputs: Sequence[str], options: dict[str, Any]) -> tuple[list[str], Any]:
    """Image files, and the images in folders (searched recursively), as for image classification."""
    from flash.image.cli import _image_inputs

    return _image_inputs(task, inputs, options)


def _ignore_index(text: str) -> int:
    return domains.non_negative_int(text)


SEGMENTATION = register_domain(
    DomainSpec(
        name="segmentation",
        summary="semantic segmentation from a folder of images and a folder of masks (one class index per pixel)",
        package="flash.image.segmentation",
        default_backbone="efficientnet_lite0",
        default_strategy="no_freeze",
        order=40,
        options=(
            *domains.split_options("folder", "folder of training images", "validation images", "test images"),
            *domains.split_options(
                "target-folder",
                "folder of their masks: single-channel PNGs of class indices, named as the images",
                "validation masks",
                "test masks",
            ),
            Option(
                "--num-classes",
                "number of classes (default: the lines of a classes.txt beside the masks, else the masks' "
                "largest value + 1)",
                domains.positive_int,
                metavar="N",
            ),
            Option(
                "--ignore-index",
                "mask value of void pixels, left out of the loss and metrics (default: 255)",
                _ignore_index,
                metavar="VALUE",
            ),
            Option(
                "--image-size",
                "short side images are resized to; training crops are squares of it (default: the backbone's)",
                domains.positive_int,
                metavar="PIXELS",
            ),
            Option("--head", "decoder (default: fpn)", choices=HEAD_CHOICES),
            Option("--loss", "loss (default: cross_entropy)", choices=LOSS_CHOICES),
            *domains.LOADING,
        ),
        build_data=_segmentation_data,
        build_task=_segmentation_task,
        extra_plots=_segmentation_plots,
        predict_inputs=_segmentation_inputs,
        predict_help="image files or folders",
        required=(("train_folder",), ("train_target_folder",)),
        example=(
            "flash finetune segmentation --train-folder camvid/train/images --train-target-folder "
            "camvid/train/masks --val-split 0.2 --ignore-index 11 --epochs 6"
        ),
    )
)
