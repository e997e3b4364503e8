"""Image classification in the ``flash`` command: ``flash finetune image`` and ``flash predict`` inputs.

Imports nothing heavy at module level: see :mod:`flash.cli.domains`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flash.cli import domains
from flash.cli.domains import Command, DomainSpec, Option, register_domain
from flash.cli.embed import register_embedder


def _image_data(options: dict[str, Any]) -> Any:
    from flash.image import ImageClassificationData

    folders = domains.data_kwargs(options, ("train_folder", "val_folder", "test_folder"))
    files = domains.data_kwargs(options, ("train_file", "val_file", "test_file"))
    if folders and files:
        raise ValueError(
            f"Give the images either as class folders (--{'/--'.join(k.replace('_', '-') for k in folders)}) "
            f"or as CSV files (--{'/--'.join(k.replace('_', '-') for k in files)}), not both."
        )
    common = {
        **domains.data_kwargs(options, ("image_size", "on_bad_image")),
        **domains.loader_kwargs(options),
    }
    if folders:
        return ImageClassificationData.from_folders(**folders, **common)
    for needed in ("input_field", "target_fields"):
        if options.get(needed) is None:
            raise ValueError(
                f"Images listed in a CSV file need --{needed.replace('_', '-')} (a column name)."
            )
    return ImageClassificationData.from_csv(
        options["input_field"],
        domains.one_or_many(options["target_fields"]),
        **files,
        **domains.data_kwargs(options, ("images_root",)),
        **common,
    )


def _image_task(options: dict[str, Any], data: Any) -> Any:
    from flash.image import ImageClassifier

    return ImageClassifier(
        num_classes=data.num_classes, multi_label=bool(data.multi_label), **domains.task_kwargs(options)
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
    parser.add_argument("--epochs", type=domains.positive_int, default=4, metavar="N", help="training epochs")
    parser.add_argument(
        "--image-size",
        type=domains.positive_int,
        metavar="PIXELS",
        help="crop size (default: 64 for the digits, else 224)",
    )
    parser.add_argument(
        "--batch-size", type=domains.positive_int, default=32, metavar="N", help="images per step"
    )
    parser.add_argument("--backbone", default="efficientnet_lite0", metavar="NAME", help="image backbone")


def _run_demo(args: argparse.Namespace) -> int:
    from flash.image.demo import run_demo

    names = ("data", "out", "epochs", "image_size", "batch_size", "backbone")
    run_demo(**{name: getattr(args, name) for name in names})
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


register_embedder("image", "flash.image.embedder:ImageEmbedder")

IMAGE = register_domain(
    DomainSpec(
        commands=(DEMO,),
        predict_help="image files or folders",
        order=10,
        outputs=("labels", "probabilities", "set"),
        name="image",
        summary="image classification from folders of images (one folder per class) or a CSV file",
        package="flash.image",
        default_backbone="efficientnet_lite0",
        default_strategy="freeze_unfreeze",
        options=(
            *domains.split_options(
                "folder",
                "folder with one subfolder of images per class",
                "validation images, same layout",
                "test images, same layout",
                val_aliases=("--valid-folder",),
            ),
            *domains.split_options(
                "file",
                "instead of folders: a CSV file with an image-path column and a class column",
                "validation CSV file, same columns",
                "test CSV file, same columns",
                metavar="FILE",
            ),
            Option("--input-field", "the CSV column of image paths", metavar="COLUMN"),
            domains.target_fields_option(
                "the CSV class column (several 0/1 columns, comma-separated: multi-label)"
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
                domains.positive_int,
                metavar="PIXELS",
            ),
            Option(
                "--on-bad-image",
                "unreadable images: 'error' lists them and stops before training, 'skip' leaves them out "
                "with a warning (default: error)",
                choices=("error", "skip"),
            ),
            *domains.LOADING,
        ),
        build_data=_image_data,
        build_task=_image_task,
        extra_plots=_image_plots,
        predict_inputs=_image_inputs,
        required=(("train_folder", "train_file"),),
        example="flash finetune image --train-folder data/train --val-folder data/val --epochs 4",
    )
)
