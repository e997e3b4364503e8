"""What ``flash finetune`` and ``flash predict`` know about each domain: options, data, task, inputs.

Options are declared here without importing the domain, so ``flash --help`` stays fast; each
domain package is imported only when its command runs.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Option:
    """One command-line option of a domain.

    ``kind`` says how the value is treated: ``"value"`` as parsed, ``"path"`` made absolute in the
    saved configuration, ``"fields"`` a comma-separated list of column names.
    """

    flag: str
    help: str
    type: Callable[[str], Any] = str
    default: Any = None
    kind: str = "value"
    choices: Sequence[Any] | None = None
    aliases: tuple[str, ...] = ()
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class DomainSpec:
    """A domain as the ``flash`` command sees it."""

    name: str
    summary: str
    package: str
    default_backbone: str
    default_strategy: str
    options: tuple[Option, ...]
    build_data: Callable[[dict[str, Any]], Any]
    build_task: Callable[[dict[str, Any], Any], Any]
    example: str = ""
    extra_plots: Callable[[Any, Any, Path], dict[str, Path]] | None = None
    predict_inputs: Callable[[Any, Sequence[str], dict[str, Any]], tuple[list[str], Any]] | None = None
    required: tuple[tuple[str, ...], ...] = field(default_factory=tuple)

    def import_package(self) -> Any:
        return importlib.import_module(self.package)


def fields(text: str) -> list[str]:
    """``"a,b , c"`` -> ``["a", "b", "c"]``; an empty name is an error."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of column names.")
    return names


def _number(text: str, kind: Callable[[str], Any], what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}.") from None


def fraction(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1.")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1.")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0.")
    return value


VAL_SPLIT = Option(
    "--val-split",
    "hold out this fraction of the training data for validation when no validation data is given",
    fraction,
    metavar="FRACTION",
)


def _data_kwargs(options: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The options named ``names`` that were given (``None`` means: the constructor's default)."""
    return {name: options[name] for name in names if options.get(name) is not None}


def _loader_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    return _data_kwargs(options, ("batch_size", "num_workers", "val_split"))


def _task_kwargs(options: dict[str, Any], **extra: Any) -> dict[str, Any]:
    kwargs = {"backbone": options["backbone"], **extra}
    for name in ("optimizer", "lr_scheduler"):
        if options.get(name) is not None:
            kwargs[name] = options[name]
    if isinstance(options.get("lr"), float):
        kwargs["learning_rate"] = options["lr"]
    return kwargs


def _by_extension(path: str, what: str) -> str:
    suffix = Path(path).suffix.lower()
    kinds = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
    if suffix not in kinds:
        raise ValueError(f"{what} {path!r}: use a .csv, .json, .jsonl or .parquet file.")
    return kinds[suffix]


def read_table(path: str) -> Any:
    """A CSV, JSON (lines) or Parquet file as a pandas data frame."""
    from flash.core.data.tables import read_table as read

    _by_extension(path, "Input file")
    if not Path(path).is_file():
        raise FileNotFoundError(f"No file at {path}.")
    return read(path, "input")


# -- image ------------------------------------------------------------------------------------
def _image_data(options: dict[str, Any]) -> Any:
    from flash.image import ImageClassificationData

    folders = _data_kwargs(options, ("train_folder", "val_folder", "test_folder"))
    files = _data_kwargs(options, ("train_file", "val_file", "test_file"))
    if folders and files:
        raise ValueError(
            f"Give the images either as class folders (--{'/--'.join(k.replace('_', '-') for k in folders)}) "
            f"or as CSV files (--{'/--'.join(k.replace('_', '-') for k in files)}), not both."
        )
    common = {**_data_kwargs(options, ("image_size",)), **_loader_kwargs(options)}
    if folders:
        return ImageClassificationData.from_folders(**folders, **common)
    for needed in ("input_field", "target_fields"):
        if options.get(needed) is None:
            raise ValueError(
                f"Images listed in a CSV file need --{needed.replace('_', '-')} (a column name)."
            )
    return ImageClassificationData.from_csv(
        options["input_field"],
        _one_or_many(options["target_fields"]),
        **files,
        **_data_kwargs(options, ("images_root",)),
        **common,
    )


def _image_task(options: dict[str, Any], data: Any) -> Any:
    from flash.image import ImageClassifier

    return ImageClassifier(
        num_classes=data.num_classes, multi_label=bool(data.multi_label), **_task_kwargs(options)
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


# -- text -------------------------------------------------------------------------------------
def _text_data(options: dict[str, Any]) -> Any:
    from flash.text import TextClassificationData

    kind = _by_extension(options["train_file"], "--train-file")
    constructor = getattr(TextClassificationData, f"from_{kind}")
    files = _data_kwargs(options, ("train_file", "val_file", "test_file"))
    return constructor(
        options["input_field"], _one_or_many(options["target_fields"]), **files, **_loader_kwargs(options)
    )


def _one_or_many(names: list[str]) -> str | list[str]:
    return names[0] if len(names) == 1 else names


def _text_task(options: dict[str, Any], data: Any) -> Any:
    from flash.text import TextClassifier

    extra = {"max_length": options["max_length"]} if options.get("max_length") is not None else {}
    return TextClassifier(
        num_classes=data.num_classes, multi_label=bool(data.multi_label), **_task_kwargs(options, **extra)
    )


def _text_inputs(task: Any, inputs: Sequence[str], options: dict[str, Any]) -> tuple[list[str], Any]:
    """Each input is a text, or a file of texts (.txt, .csv, .tsv, .json, .jsonl, .parquet)."""
    if options.get("input_field"):
        task.input_field = options["input_field"]
    names: list[str] = []
    texts: list[str] = []
    for item in inputs:
        found, single = task.texts_of(item)
        names.extend([item] if single else [f"{item}:{row}" for row in range(len(found))])
        texts.extend(found)
    return names, texts


# -- tabular ----------------------------------------------------------------------------------
def _tabular_data(options: dict[str, Any]) -> Any:
    import flash.tabular as tabular

    cls = tabular.TabularRegressionData if options.get("regression") else tabular.TabularClassificationData
    kind = _by_extension(options["train_file"], "--train-file")
    if kind == "json":
        raise ValueError("Tabular data is read from .csv or .parquet files; --train-file is JSON.")
    kwargs = _data_kwargs(
        options,
        ("categorical_fields", "numerical_fields", "target_fields", "train_file", "val_file", "test_file"),
    )
    if kind == "parquet":
        import pandas as pd

        frames = {
            name.replace("_file", "_data_frame"): pd.read_parquet(kwargs.pop(name))
            for name in ("train_file", "val_file", "test_file")
            if name in kwargs
        }
        return cls.from_data_frame(**kwargs, **frames, **_loader_kwargs(options))
    return cls.from_csv(**kwargs, **_loader_kwargs(options))


def _tabular_task(options: dict[str, Any], data: Any) -> Any:
    import flash.tabular as tabular

    cls = tabular.TabularRegressor if options.get("regression") else tabular.TabularClassifier
    return cls.from_data(data, **_task_kwargs(options))


def _tabular_inputs(task: Any, inputs: Sequence[str], options: dict[str, Any]) -> tuple[list[str], Any]:
    import pandas as pd

    frames = []
    names: list[str] = []
    for item in inputs:
        frame = read_table(item)
        frames.append(frame)
        names.extend(f"{item}:{row}" for row in range(len(frame)))
    return names, pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


BATCH_SIZE = Option(
    "--batch-size", "items per batch (default: the data module's, 32)", positive_int, metavar="N"
)
NUM_WORKERS = Option(
    "--num-workers",
    "data loader processes (default: none on 1-2 CPU cores, more on bigger machines)",
    non_negative_int,
    metavar="N",
)

DOMAINS: dict[str, DomainSpec] = {
    "image": DomainSpec(
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
    ),
    "text": DomainSpec(
        name="text",
        summary="text classification from a CSV, JSON or Parquet file",
        package="flash.text",
        default_backbone="all-MiniLM-L6-v2",
        default_strategy="no_freeze",
        options=(
            Option(
                "--train-file", "training file (.csv, .json, .jsonl or .parquet)", kind="path", metavar="FILE"
            ),
            Option(
                "--val-file",
                "validation file, same columns",
                kind="path",
                aliases=("--valid-file",),
                metavar="FILE",
            ),
            Option("--test-file", "test file, same columns", kind="path", metavar="FILE"),
            Option("--input-field", "the column holding the text", metavar="COLUMN"),
            Option(
                "--target-fields",
                "the label column (several, comma-separated: multi-label with one 0/1 column per class)",
                fields,
                kind="fields",
                aliases=("--target-field",),
                metavar="COLUMNS",
            ),
            Option(
                "--max-length", "tokens kept per text (default: the task's)", positive_int, metavar="TOKENS"
            ),
            VAL_SPLIT,
            BATCH_SIZE,
            NUM_WORKERS,
        ),
        build_data=_text_data,
        build_task=_text_task,
        predict_inputs=_text_inputs,
        required=(("train_file",), ("input_field",), ("target_fields",)),
        example=(
            "flash finetune text --train-file train.csv --val-file valid.csv "
            "--input-field sentence --target-field label --epochs 2"
        ),
    ),
    "tabular": DomainSpec(
        name="tabular",
        summary="tabular classification or regression from a CSV or Parquet file",
        package="flash.tabular",
        default_backbone="tabm",
        default_strategy="no_freeze",
        options=(
            Option("--train-file", "training table (.csv or .parquet)", kind="path", metavar="FILE"),
            Option(
                "--val-file",
                "validation table, same columns",
                kind="path",
                aliases=("--valid-file",),
                metavar="FILE",
            ),
            Option("--test-file", "test table, same columns", kind="path", metavar="FILE"),
            Option(
                "--target-fields",
                "the target column(s), comma-separated",
                fields,
                kind="fields",
                aliases=("--target-field",),
                metavar="COLUMNS",
            ),
            Option(
                "--categorical-fields",
                "categorical columns, comma-separated (default: inferred from the data)",
                fields,
                kind="fields",
                metavar="COLUMNS",
            ),
            Option(
                "--numerical-fields",
                "numerical columns, comma-separated (default: inferred from the data)",
                fields,
                kind="fields",
                metavar="COLUMNS",
            ),
            Option(
                "--numerical-scaling",
                "how numbers are scaled, fitted on the training rows (default: the data module's, quantile)",
                choices=("quantile", "robust", "standard"),
            ),
            Option("--regression", "predict numbers (regression) instead of classes", kind="flag"),
            VAL_SPLIT,
            BATCH_SIZE,
            NUM_WORKERS,
        ),
        build_data=_tabular_data,
        build_task=_tabular_task,
        predict_inputs=_tabular_inputs,
        required=(("train_file",), ("target_fields",)),
        example=(
            "flash finetune tabular --train-file titanic.csv --target-field Survived "
            "--categorical-fields Pclass,Sex,Embarked --numerical-fields Age,SibSp,Parch,Fare --val-split 0.2"
        ),
    ),
}


def domain_of_task(task: Any) -> DomainSpec:
    """The spec of a loaded task's domain (``task.domain``)."""
    name = getattr(task, "domain", None)
    if name not in DOMAINS:
        raise ValueError(f"{type(task).__name__} has domain {name!r}, which the flash command does not know.")
    return DOMAINS[name]
