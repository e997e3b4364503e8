"""Image classification in the ``flash`` command: ``flash finetune image`` and ``flash predict`` inputs.

Imports nothing heavy at module level: see :mod:`flash.cli.domains`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flash.cli.domains import (
    BATCH_SIZE,
    NUM_WORKERS,
    VAL_SPLIT,
    Command,
    DomainSpec,
    Option,
    data_kwargs,
    fields,
    loader_kwargs,
    one_or_many,
    positive_int,
    register_domain,
    task_kwargs,
)


def _image_data(options: dict[str, Any]) -> Any:
    from flash.image import ImageClassificationData

    folders = data_kwargs(options, ("train_folder", "val_folder", "test_folder"))
    files = data_kwargs(options, ("train_file", "val_file", "test_file"))
    if folders and files:
        raise ValueError(
            f"Give the images either as class folders (--{'/--'.join(k.replace('_', '-') for k in folders)}) "
            f"or as CSV files (--{'/--'.join(k.replace('_', '-') for k in files)}), not both."
        )
    common = {**data_kwargs(options, ("image_size", "on_bad_image")), **loader_kwargs(options)}
    if folders:
        return ImageClassificationData.from_folders(**folders, **common)
    for needed in ("input_field", "target_fields"):
        if options.get(needed) is None:
            raise ValueError(
                f"Images listed in a CSV file need --{needed.replace('_', '-')} (a column name)."
            )
    return ImageClassificationData.from_csv(
        options["input_field"],
        one_or_many(options["target_fields"]),
        **files,
        **data_kwargs(options, ("images_root",)),
        **common,
    )


def _image_task(options: dict[str, Any], data: Any) -> Any:
    from flash.image import ImageClassifier

    return ImageClassifier(
        num_classes=data.num_classes, multi_label=bool(data.multi_label), **task_kwargs(options)
    )


def _image_plots(task: Any, data: Any, folder: Path) -> dict[str, Path]:
    from flash.image.plots import plot_worst_predictions, show_batch

    plots: dict[str, Path] = {}
    if data.splits.get("val") is not None:
        plots["worst predictions"] = plot_worst_predictions(task, data, path=folder / "worst_predictions.png")
    plots["training batch"] = show_batch(data, path=folder / "train_batch.png")
    return plots


def _image_inputs(task: Any, inputs: Sequence[str], options: dict[str, Any]) -> tuple[list[str], Any]:
    """Image files, and the images in folders (searched recursively, hidden and non-image files skipped)."""
    from flash.image.io import list_images

    files: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = list_images(path, recursive=True)
            if not found:
                raise ValueError(f"The folder {item} holds no images.")
            files.extend(found)
        elif path.is_file():
            files.append(str(path))
        else:
            raise FileNotFoundError(f"No image file or folder at {item}.")
    return files, files


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", metavar="DIR", help="a folder with train/ and val/ class folders (default: the digits)"
    )
    parser.add_argument("--out", metavar="DIR", default="flash_demo", help="where the demo writes its files")
    parser.add_argument("--epochs", type=positive_int, default=4, metavar="N", help="training epochs")
    parser.add_argument(
        "--image-size",
        type=positive_int,
        metavar="PIXELS",
        help="crop size (default: 64 for the digits, else 224)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="images per step")
    parser.add_argument("--backbone", default="efficientnet_lite0", metavar="NAME", help="image backbone")


def _run_demo(args: argparse.Namespace) -> int:
    from flash.image.demo import run_demo

    run_demo(
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        image_size=args.image_size,
        batch_size=args.batch_size,
        backbone=args.backbone,
    )
    return 0


DEMO = Command(
    name="demo",
    help="finetune the default image model on a shipped data set, offline (or on --data)",
    description=(
        "Run the finetuning example end to end with no network: renders scikit-learn's handwritten "
        "digits as image files, finetunes the default pretrained backbone (frozen for the first half "
        "of the epochs), prints validation accuracy and a few predictions and saves a checkpoint. "
        "--data takes a folder with train/ and val/ class folders instead."
    ),
    configure=_demo_arguments,
    run=_run_demo,
)


IMAGE = register_domain(
    DomainSpec(
        commands=(DEMO,),
        predict_help="image files or folders",
        order=10,
        outputs=("labels", "probabilities"),
        name="image",
        summary="image classification from folders of images (one folder per class) or a CSV file",
        package="flash.image",
        default_backbone="efficientnet_lite0",
        default_strategy="freeze_unfreeze",
        options=(
            Option(
                "--train-folder", "folder with one subfolder of images per class", kind="path", metavar="DIR"
            ),
            Option(
                "--val-folder",
                "validation images, same layout",
                kind="path",
                aliases=("--valid-folder",),
                metavar="DIR",
            ),
            Option("--test-folder", "test images, same layout", kind="path", metavar="DIR"),
            Option(
                "--train-file",
                "instead of folders: a CSV file with an image-path column and a class column",
                kind="path",
                metavar="FILE",
            ),
            Option("--val-file", "validation CSV file, same columns", kind="path", metavar="FILE"),
            Option("--test-file", "test CSV file, same columns", kind="path", metavar="FILE"),
            Option("--input-field", "the CSV column of image paths", metavar="COLUMN"),
            Option(
                "--target-fields",
                "the CSV class column (several 0/1 columns, comma-separated: multi-label)",
                fields,
                kind="fields",
                aliases=("--target-field",),
                metavar="COLUMNS",
            ),
            Option(
                "--images-root",
                "folder the CSV's image paths are relative to (default: the CSV file's folder)",
                kind="path",
                metavar="DIR",
            ),
            Option(
                "--image-size",
                "image side in pixels (default: the backbone's)",
                positive_int,
                metavar="PIXELS",
            ),
            Option(
                "--on-bad-image",
                "unreadable images: 'error' lists them and stops before training, 'skip' leaves them out "
                "with a warning (default: error)",
                choices=("error", "skip"),
            ),
            VAL_SPLIT,
            BATCH_SIZE,
            NUM_WORKERS,
        ),
        build_data=_image_data,
        build_task=_image_task,
        extra_plots=_image_plots,
        predict_inputs=_image_inputs,
        required=(("train_folder", "train_file"),),
        example="flash finetune image --train-folder data/train --val-folder data/val --epochs 4",
    )
)
