"""``ImageClassificationData``: images from folders, file lists, data frames, CSV files, arrays."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from flash.core.data.datamodule import DataModule, Split
from flash.core.data.download import local_path
from flash.core.data.splits import encode_multi_hot_columns, encode_splits
from flash.core.utils.validation import check_folder, check_optional_int, check_probability
from flash.image.backbones import DEFAULT_BACKBONE, IMAGE_BACKBONES
from flash.image.dataset import DecodedImageCache, ImageDataset
from flash.image.features import FrozenFeatures, SharedFeatures
from flash.image.io import IMAGE_EXTENSIONS, is_image_file, list_images, predict_folder_images
from flash.image.preprocessing import ImagePreprocessing
from flash.image.transforms import DEFAULT_CROP_SCALE, ImageCollate, ImagePipeline, UserTransform

BAD_IMAGE_POLICIES = ("error", "skip")

Resolver = Callable[[str, Any], str]
"""Lightning Flash's ``resolver(root, value) -> image path``."""


def _default_preprocessing() -> ImagePreprocessing:
    """The default backbone's preprocessing, without building it."""
    if DEFAULT_BACKBONE in IMAGE_BACKBONES:
        return ImagePreprocessing(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.875, "bilinear")
    return ImagePreprocessing()


def _class_folders(folder: Any, what: str, require_images: bool) -> dict[str, list[str]]:
    """``{class name: image paths}`` of a folder holding one subfolder per class."""
    path = check_folder(folder, what)
    subfolders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = list_images(path)
    if not subfolders:
        hint = (
            f" It holds {len(loose)} images directly; put them in one subfolder per class." if loose else ""
        )
        raise ValueError(
            f"{what} {str(folder)!r} has no class subfolders.{hint} Expected {what}/<class name>/<image>."
        )
    if loose:
        warnings.warn(
            f"{what} {str(folder)!r} holds {len(loose)} images outside the class subfolders; they are "
            f"ignored (e.g. {os.path.basename(loose[0])}).",
            stacklevel=3,
        )
    classes: dict[str, list[str]] = {}
    empty = []
    for sub in subfolders:
        images = list_images(sub, recursive=True)
        if images:
            classes[sub.name] = images
        else:
            empty.append(sub)
    if empty:
        names = ", ".join(p.name for p in empty)
        others = {p.name for e in empty for p in e.rglob("*") if p.is_file()}
        found = f" (found only {', '.join(sorted(others)[:5])})" if others else ""
        message = (
            f"{what} {str(folder)!r}: class folder(s) {names} hold no images{found}. Images end in "
            f"{', '.join(IMAGE_EXTENSIONS)}."
        )
        if require_images:
            raise ValueError(message + " Remove the folder or add images of that class.")
        warnings.warn(message, stacklevel=3)
    if not classes:
        raise ValueError(f"{what} {str(folder)!r} holds no images in its class subfolders.")
    return classes


def _folder_split(classes: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    files, targets = [], []
    for name, images in classes.items():
        files += images
        targets += [name] * len(images)
    return files, targets


def _check_files(files: Any, what: str) -> list[str]:
    if isinstance(files, str | os.PathLike):
        raise TypeError(f"{what} must be a list of file paths, not one path {str(files)!r}.")
    files = [str(local_path(f)) for f in files]  # http(s) URLs are downloaded once into the cache
    if not files:
        raise ValueError(f"{what} is empty.")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        shown = "\n  ".join(missing[:10])
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise FileNotFoundError(f"{len(missing)} of the {what} do not exist:\n  {shown}{more}")
    return files


def _resolve_path(value: Any, root: Path | None, row: int, what: str) -> str:
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise ValueError(f"{what} row {row}: {value!r} is not an image path.")
    path = Path(str(value).strip())
    if root is not None and not path.is_absolute():
        path = root / path
    if path.is_file():
        return str(path)
    for extension in IMAGE_EXTENSIONS:  # ids without extension, as in many Kaggle CSV files
        candidate = path.with_name(path.name + extension)
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"{what} row {row}: image {str(value)!r} not found (looked for {path}"
        f"{' with and without an image extension' if not path.suffix else ''}). "
        "Pass images_root= if paths are relative to another folder."
    )


def _array_constructor(kind: str, doc: str) -> Any:
    """``from_numpy`` or ``from_tensors``: images as arrays of one ``kind``, and their targets."""

    def constructor(
        cls: type[ImageClassificationData],
        train_data: Any = None,
        train_targets: Sequence[Any] | None = None,
        val_data: Any = None,
        val_targets: Sequence[Any] | None = None,
        test_data: Any = None,
        test_targets: Sequence[Any] | None = None,
        predict_data: Any = None,
        *,
        val_split: float | None = None,
        multi_label: bool | None = None,
        **kwargs: Any,
    ) -> ImageClassificationData:
        pairs = []
        for name, data, target in (
            ("train", train_data, train_targets),
            ("val", val_data, val_targets),
            ("test", test_data, test_targets),
        ):
            if data is None:
                pairs.append(None)
                continue
            if target is None:
                raise ValueError(f"{name}_data needs {name}_targets.")
            if isinstance(target, torch.Tensor | np.ndarray):
                target = target.tolist()
            pairs.append((_array_items(data, kind, f"{name}_data"), target))
        predict = None if predict_data is None else _array_items(predict_data, kind, "predict_data")
        return cls._from_inputs(*pairs, predict, val_split, multi_label, **kwargs)

    constructor.__name__ = constructor.__qualname__ = "from_tensors" if kind == "torch" else "from_numpy"
    constructor.__doc__ = doc
    return classmethod(constructor)


TRANSFORM_KWARGS = ("image_size", "mean", "std")
"""What Lightning Flash's ``transform_kwargs=`` may set here."""


def _transform_kwargs(transform_kwargs: Any, image_size: Any) -> tuple[Any, dict[str, tuple[float, ...]]]:
    """Lightning Flash's ``transform_kwargs``: the crop side and a normalisation (``mean``, ``std``)."""
    if transform_kwargs is None:
        return image_size, {}
    if not isinstance(transform_kwargs, Mapping):
        raise TypeError(f"transform_kwargs must be a dict, got {type(transform_kwargs).__name__}.")
    unknown = sorted(set(transform_kwargs) - set(TRANSFORM_KWARGS))
    if unknown:
        raise ValueError(
            f"transform_kwargs {unknown} are not known here; it takes {', '.join(TRANSFORM_KWARGS)}. "
            "For other preprocessing pass transform= (a callable on a PIL image)."
        )
    size = transform_kwargs.get("image_size")
    if size is not None:
        if isinstance(size, Sequence) and not isinstance(size, str):
            if len(size) != 2 or size[0] != size[1]:
                raise ValueError(
                    f"transform_kwargs image_size={tuple(size)!r}: crops here are square; pass one side "
                    "(e.g. image_size=224), or a transform= that resizes as you need."
                )
            size = size[0]
        if image_size is not None and image_size != size:
            raise ValueError(
                f"image_size={image_size} and transform_kwargs image_size={size} differ; pass one."
            )
        image_size = size
    normalization: dict[str, tuple[float, ...]] = {}
    if ("mean" in transform_kwargs) != ("std" in transform_kwargs):
        raise ValueError("transform_kwargs needs both mean and std (one value per channel), or neither.")
    for key in ("mean", "std"):
        if key in transform_kwargs:
            values = transform_kwargs[key]
            values = [values] * 3 if isinstance(values, int | float) else list(values)
            if len(values) != 3 or not all(isinstance(v, int | float) for v in values):
                raise ValueError(
                    f"transform_kwargs {key} must be 3 numbers (R, G, B), got {transform_kwargs[key]!r}."
                )
            if key == "std" and any(v <= 0 for v in values):
                raise ValueError(f"transform_kwargs std must be positive, got {values}.")
            normalization[key] = tuple(float(v) for v in values)
    return image_size, normalization


class ImageClassificationData(DataModule):
    """Images and their classes for :class:`~flash.image.ImageClassifier`.

    Build it with a ``from_*`` constructor. Class names come from the training data (folder names,
    target values or target column names); ``num_classes`` and ``labels`` travel to the task.

    Args:
        *splits: the ``train``, ``val``, ``test`` and ``predict`` splits (image paths, PIL images or
            arrays as ``Split.inputs``), in that order or by name.
        image_size: side of the crops; default: the task's backbone's (224 for the default).
        transform: a callable on an RGB PIL image (e.g. a torchvision ``Compose``) used for every
            stage instead of the default crops.
        train_transform: as ``transform``, for training only.
        on_bad_image: ``"error"`` (default) lists unreadable images before training; ``"skip"``
            leaves them out with a warning.
        cache_mb: memory bound of the decoded-image cache (default a quarter of RAM, at most
            4 GiB; ``0`` turns it off).
        crop_scale: area range of random training crops.
        hflip: probability of a random horizontal flip in training; ``0`` for images whose class
            changes when mirrored (digits, text, left/right).
        transform_kwargs: Lightning Flash's spelling: ``{"image_size": 196 or (196, 196), "mean":
            (r, g, b), "std": (r, g, b)}``; ``mean``/``std`` replace the backbone's normalisation
            (in training, evaluation and the task's own ``predict``).
        **options: ``labels``, ``multi_label``, ``batch_size``, ``num_workers``, ``seed``: see :class:`flash.core.data.datamodule.DataModule`.
    """

    def __init__(
        self,
        *splits: Split | None,
        image_size: int | None = None,
        transform: UserTransform | None = None,
        train_transform: UserTransform | None = None,
        on_bad_image: str = "error",
        cache_mb: float | None = None,
        crop_scale: Sequence[float] = DEFAULT_CROP_SCALE,
        hflip: float = 0.5,
        transform_kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        image_size, self.normalization = _transform_kwargs(transform_kwargs, image_size)
        super().__init__(*splits, **options)
        check_optional_int(image_size, "image_size", 8, "pixels")
        for name, value in (("transform", transform), ("train_transform", train_transform)):
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be a callable taking a PIL image, got {type(value).__name__}.")
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}.")
        scale = tuple(float(s) for s in crop_scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {crop_scale!r}.")
        self.image_size = image_size
        self.transform = transform
        self.train_transform = train_transform
        self.on_bad_image = on_bad_image
        self.crop_scale = scale
        self.hflip = check_probability(hflip, "hflip")
        self.cache = DecodedImageCache.of_size(cache_mb)
        self.preprocessing = _default_preprocessing()
        if image_size is not None:
            self.preprocessing = self.preprocessing.replace(image_size=image_size)
        if self.normalization:
            self.preprocessing = self.preprocessing.replace(**self.normalization)
        self.channels_last = True
        self.on_device: set[str] = set()
        """Stages whose batches come from the GPU input path (no CPU cache, no frozen features)."""
        self.frozen_features = FrozenFeatures(self)
        self._fold_features: SharedFeatures | None = None
        """The frozen-backbone feature cache, installed on the trainer by :meth:`setup`."""

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def _from_inputs(
        cls,
        train: tuple[list[Any], Sequence[Any]] | None,
        val: tuple[list[Any], Sequence[Any]] | None,
        test: tuple[list[Any], Sequence[Any]] | None,
        predict: list[Any] | None,
        val_split: float | None,
        multi_label: bool | None,
        labels: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> ImageClassificationData:
        """The one path every constructor takes: :func:`flash.core.data.splits.encode_splits`."""
        encoded = encode_splits(
            {
                "train": train and train[0],
                "val": val and val[0],
                "test": test and test[0],
                "predict": predict,
            },
            {"train": train and train[1], "val": val and val[1], "test": test and test[1]},
            labels=labels,
            multi_label=multi_label,
            val_split=val_split,
            seed=kwargs.get("seed", 42),
            noun="images",
        )
        return cls(
            **encoded.splits,
            labels=encoded.labels,
            multi_label=encoded.multi_label,
            pending_targets=encoded.pending,
            **kwargs,
        )

    @classmethod
    def from_folders(
        cls,
        train_folder: str | os.PathLike | None = None,
        val_folder: str | os.PathLike | None = None,
        test_folder: str | os.PathLike | None = None,
        predict_folder: str | os.PathLike | None = None,
        *,
        valid_folder: str | os.PathLike | None = None,
        val_split: float | None = None,
        **kwargs: Any,
    ) -> ImageClassificationData:
        """Images in one subfolder per class: ``train_folder/<class>/<image>``.

        Args:
            train_folder, val_folder (alias ``valid_folder``), test_folder: folders of class
                subfolders. Hidden and non-image files (``.DS_Store``, ``Thumbs.db``) are ignored.
            predict_folder: a folder of images (no classes).
            val_split: fraction of the training images held out for validation (stratified).
            **kwargs: ``batch_size``, ``num_workers``, ``image_size``, ``transform``, ... (see the class).

        Raises:
            FileNotFoundError: for a folder that does not exist.
            ValueError: for a folder without class subfolders or images, an empty class folder in
                training, or validation/test classes that training lacks.
        """
        if valid_folder is not None:
            if val_folder is not None:
                raise ValueError("Pass val_folder or its alias valid_folder, not both.")
            val_folder = valid_folder
        train = val = test = None
        train_classes = None
        if train_folder is not None:
            train_classes = _class_folders(train_folder, "train_folder", require_images=True)
            train = _folder_split(train_classes)
        for name, folder in (("val_folder", val_folder), ("test_folder", test_folder)):
            if folder is None:
                continue
            classes = _class_folders(folder, name, require_images=False)
            if train_classes is not None:
                unknown = sorted(set(classes) - set(train_classes))
                if unknown:
                    raise ValueError(
                        f"{name} {str(folder)!r} has class folder(s) {', '.join(unknown)} that train_folder "
                        f"lacks. Training classes: {', '.join(train_classes)}. Every class needs training "
                        "images (or rename the folder to match)."
                    )
            if name == "val_folder":
                val = _folder_split(classes)
            else:
                test = _folder_split(classes)
        predict = predict_folder_images(predict_folder)
        labels = kwargs.pop("labels", None)
        if train_classes is not None:
            if labels is not None and [str(x) for x in labels] != list(train_classes):
                raise ValueError(
                    f"labels={list(labels)} differ from the class folders of train_folder "
                    f"({', '.join(train_classes)}); leave labels out to use the folder names."
                )
            labels = list(train_classes)
        return cls._from_inputs(train, val, test, predict, val_split, False, labels=labels, **kwargs)

    @classmethod
    def from_files(
        cls,
        train_files: Sequence[str | os.PathLike] | None = None,
        train_targets: Sequence[Any] | None = None,
        val_files: Sequence[str | os.PathLike] | None = None,
        val_targets: Sequence[Any] | None = None,
        test_files: Sequence[str | os.PathLike] | None = None,
        test_targets: Sequence[Any] | None = None,
        predict_files: Sequence[str | os.PathLike] | None = None,
        *,
        val_split: float | None = None,
        multi_label: bool | None = None,
        **kwargs: Any,
    ) -> ImageClassificationData:
        """Lists of image files and their targets (class names or numbers; a list of classes per
        image makes the data multi-label)."""
        train = (_check_files(train_files, "train_files"), train_targets) if train_files is not None else None
        val = (_check_files(val_files, "val_files"), val_targets) if val_files is not None else None
        test = (_check_files(test_files, "test_files"), test_targets) if test_files is not None else None
        predict = _check_files(predict_files, "predict_files") if predict_files is not None else None
        for name, pair in (("train", train), ("val", val), ("test", test)):
            if pair is not None and pair[1] is None:
                raise ValueError(f"{name}_files need {name}_targets.")
        return cls._from_inputs(train, val, test, predict, val_split, multi_label, **kwargs)

    @classmethod
    def from_data_frame(
        cls,
        input_field: str,
        target_fields: str | Sequence[str] | None = None,
        train_data_frame: Any = None,
        val_data_frame: Any = None,
        test_data_frame: Any = None,
        predict_data_frame: Any = None,
        *,
        images_root: str | os.PathLike | None = None,
        train_images_root: str | os.PathLike | None = None,
        val_images_root: str | os.PathLike | None = None,
        test_images_root: str | os.PathLike | None = None,
        predict_images_root: str | os.PathLike | None = None,
        val_split: float | None = None,
        multi_label: bool | None = None,
        train_resolver: Resolver | None = None,
        val_resolver: Resolver | None = None,
        test_resolver: Resolver | None = None,
        predict_resolver: Resolver | None = None,
        **kwargs: Any,
    ) -> ImageClassificationData:
        """pandas data frames with an image-path column and one or more target columns.

        Args:
            input_field: the column of image paths (relative to ``images_root``; a missing image
                extension is found).
            target_fields: one column of classes; or several 0/1 columns, one per class
                (multi-label, the column names are the classes). With ``multi_label=True`` a single
                column may hold several classes per row separated by ``,`` or ``;``.
            images_root: folder the paths are relative to (per split: ``train_images_root``, ...).
            train_resolver, val_resolver, test_resolver, predict_resolver: Lightning Flash's
                ``resolver(root, value) -> path`` of a split, for ids that need more than a missing
                extension found (``root`` is the split's images root, ``""`` if none).
        """
        import pandas as pd

        resolvers = {
            "train": train_resolver,
            "val": val_resolver,
            "test": test_resolver,
            "predict": predict_resolver,
        }
        for name, resolver in resolvers.items():
            if resolver is not None and not callable(resolver):
                raise TypeError(
                    f"{name}_resolver must be a callable (root, value) -> path, got {type(resolver).__name__}."
                )
        fields = [target_fields] if isinstance(target_fields, str) else list(target_fields or [])
        roots = {
            "train": train_images_root or images_root,
            "val": val_images_root or images_root,
            "test": test_images_root or images_root,
            "predict": predict_images_root or images_root,
        }
        frames = {"train": train_data_frame, "val": val_data_frame, "test": test_data_frame}
        if all(f is None for f in (*frames.values(), predict_data_frame)):
            raise ValueError(
                "Pass at least one of train_data_frame, val_data_frame, test_data_frame, predict_data_frame."
            )
        multi_columns = len(fields) > 1
        labels = list(fields) if multi_columns else kwargs.pop("labels", None)

        def paths(frame: Any, name: str) -> list[str]:
            if not isinstance(frame, pd.DataFrame):
                raise TypeError(f"{name}_data_frame must be a pandas DataFrame, got {type(frame).__name__}.")
            if input_field not in frame.columns:
                raise KeyError(
                    f"{name} data has no column {input_field!r}; columns: {', '.join(map(str, frame.columns))}."
                )
            root = Path(roots[name]) if roots[name] is not None else None
            if root is not None:
                check_folder(root, f"{name}_images_root")
            resolver = resolvers[name]
            values = frame[input_field].tolist()
            if resolver is not None:  # the resolver's answer is the path itself
                values = [resolver(str(root) if root is not None else "", v) for v in values]
                return [_resolve_path(v, None, i, f"{name} ({name}_resolver)") for i, v in enumerate(values)]
            return [_resolve_path(v, root, i, name) for i, v in enumerate(values)]

        def targets(frame: pd.DataFrame, name: str) -> Any:
            missing = [f for f in fields if f not in frame.columns]
            if not fields or missing:
                raise KeyError(
                    f"{name} data has no target column(s) {missing or fields}; columns: "
                    f"{', '.join(map(str, frame.columns))}."
                )
            if multi_columns:
                hot = encode_multi_hot_columns(frame[fields].to_numpy(), name)
                return [[fields[j] for j in np.flatnonzero(row)] for row in hot]
            return frame[fields[0]].tolist()

        pairs: dict[str, tuple[list[str], Any] | None] = {}
        for name, frame in frames.items():
            pairs[name] = None if frame is None else (paths(frame, name), targets(frame, name))
        predict = paths(predict_data_frame, "predict") if predict_data_frame is not None else None
        return cls._from_inputs(
            pairs["train"],
            pairs["val"],
            pairs["test"],
            predict,
            val_split,
            True if multi_columns else multi_label,
            labels=labels,
            **kwargs,
        )

    @classmethod
    def from_csv(
        cls,
        input_field: str,
        target_fields: str | Sequence[str] | None = None,
        train_file: str | os.PathLike | None = None,
        val_file: str | os.PathLike | None = None,
        test_file: str | os.PathLike | None = None,
        predict_file: str | os.PathLike | None = None,
        *,
        images_root: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> ImageClassificationData:
        """CSV files with an image-path column and target column(s); see :meth:`from_data_frame`.

        Relative image paths are resolved against ``images_root``, by default the CSV file's folder.
        """
        import pandas as pd

        frames: dict[str, Any] = {}
        for name, file in (
            ("train", train_file),
            ("val", val_file),
            ("test", test_file),
            ("predict", predict_file),
        ):
            if file is None:
                continue
            if not os.path.isfile(file):
                raise FileNotFoundError(f"{name}_file {str(file)!r} does not exist.")
            frames[name] = pd.read_csv(file)
            if images_root is None:
                kwargs.setdefault(f"{name}_images_root", str(Path(file).parent))
        return cls.from_data_frame(
            input_field,
            target_fields,
            frames.get("train"),
            frames.get("val"),
            frames.get("test"),
            frames.get("predict"),
            images_root=images_root,
            **kwargs,
        )

    from_numpy = _array_constructor(
        "numpy",
        """Images as numpy arrays: ``(N, H, W)`` or ``(N, H, W, C)`` (or a list of ``(H, W[, C])``
        arrays of any size); uint8 0-255 or float 0-1.""",
    )
    from_tensors = _array_constructor(
        "torch",
        """Images as torch tensors: ``(N, C, H, W)`` or ``(N, H, W)`` (or a list of ``(C, H, W)``);
        uint8 0-255 or float 0-1. Arguments as :meth:`from_numpy`.""",
    )

    # -- the task, taken in Lightning's hooks -----------------------------------------------------
    def attach_task(self, task: Any) -> None:
        """Take the task's preprocessing (image size, normalisation, resizing).

        The data's own ``image_size``, when given, wins: the task is handed the changed
        preprocessing (:meth:`~flash.core.model.task.Task.use_preprocessing`), so it predicts at
        that size and its checkpoints keep it. The data's ``transform`` becomes the task's
        evaluation transform for :meth:`~flash.image.ImageClassifier.predict` in this process.
        """
        super().attach_task(task)
        preprocessing = getattr(task, "preprocessing", None)
        if preprocessing:
            preprocessing = ImagePreprocessing.from_dict(preprocessing)
            changes: dict[str, Any] = dict(self.normalization)
            if self.image_size is not None and preprocessing.image_size != self.image_size:
                changes["image_size"] = self.image_size
            if changes:
                preprocessing = preprocessing.replace(**changes)
                if hasattr(task, "use_preprocessing"):
                    task.use_preprocessing(preprocessing)
            self.preprocessing = preprocessing
        if hasattr(task, "use_eval_transform"):
            task.use_eval_transform(self.transform)
        self.channels_last = bool(getattr(task, "channels_last", True))

    def fold(self, train_indices: Sequence[int], val_indices: Sequence[int]) -> ImageClassificationData:
        """A cross-validation fold (see :meth:`~flash.core.data.datamodule.DataModule.fold`) with its
        own frozen-feature cache, filled from features the other folds of this data computed with
        the same frozen backbone (:class:`~flash.image.features.SharedFeatures`); decoded images
        stay shared with this data."""
        clone = super().fold(train_indices, val_indices)
        assert isinstance(clone, ImageClassificationData)
        clone.on_device = set()
        if self._fold_features is None:
            self._fold_features = SharedFeatures()
        positions = {"train": [int(i) for i in train_indices], "val": [int(i) for i in val_indices]}
        clone.frozen_features = FrozenFeatures(clone, self._fold_features, positions)
        return clone

    def setup(self, stage: str) -> None:
        """Attach the trainer's task and install the frozen-feature cache for this run."""
        super().setup(stage)
        trainer = self.trainer
        if trainer is not None and self.frozen_features not in trainer.callbacks:
            trainer.callbacks.append(self.frozen_features)

    def teardown(self, stage: str) -> None:
        """Take the frozen-feature cache off the trainer again (it is this data's, not the trainer's)."""
        trainer = self.trainer
        if trainer is not None and self.frozen_features in trainer.callbacks:
            trainer.callbacks.remove(self.frozen_features)
        super().teardown(stage)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training and validation batches carry the frozen backbone's cached ``features``."""
        trainer = self.trainer
        task = getattr(trainer, "lightning_module", None) if trainer is not None else None
        if task is None or not isinstance(batch, dict):
            return batch
        return self.frozen_features.with_features(batch, trainer, task)

    # -- datasets and loaders -------------------------------------------------------------------
    def pipeline(self, stage: str, train: bool | None = None) -> ImagePipeline:
        """The decoding and cropping of ``stage`` (random crops for ``train`` unless ``train=False``)."""
        augment = stage == "train" if train is None else train
        transform = (self.train_transform or self.transform) if augment else self.transform
        return ImagePipeline(self.preprocessing, augment, transform, self.crop_scale, self.hflip)

    def make_dataset(self, split: Split, stage: str) -> ImageDataset:
        dataset = ImageDataset(split.inputs, split.targets, self.pipeline(stage), self.cache, stage)
        bad = dataset.prefill(skip_bad=self.on_bad_image == "skip")
        if bad:
            keep = sorted(set(range(len(split))) - set(bad))
            if not keep:
                raise ValueError(f"None of the {stage} images can be read.")
            kept = split.subset(keep)
            self.splits[stage] = kept
            dataset = ImageDataset(kept.inputs, kept.targets, dataset.pipeline, self.cache, stage)
        return dataset

    def _loader(self, stage: str) -> Any:
        """On one CUDA GPU, image files are decoded and augmented on the device
        (:func:`flash.image.gpu_pipeline.gpu_loader_for`); elsewhere the CPU path with its cache."""
        from flash.image.gpu_pipeline import gpu_loader_for

        augmentation = {"hflip": self.hflip} if stage == "train" else {}
        device_loader = gpu_loader_for(self, stage, **augmentation) if self.trainer is not None else None
        if device_loader is not None:
            self.on_device.add(stage)
            return device_loader
        self.on_device.discard(stage)
        return super()._loader(stage)

    def collate_fn(self, stage: str) -> Callable[[list[Any]], Any]:
        return ImageCollate(self.preprocessing["mean"], self.preprocessing["std"], self.channels_last)

    def eval_loader(self, stage: str) -> DataLoader:
        """``stage``'s items with evaluation crops, in order (for computing frozen features)."""
        dataset = self.dataset(stage)
        if not isinstance(dataset, ImageDataset):
            raise ValueError(f"This data module has no {stage} data.")
        plain = dataset.with_pipeline(self.pipeline(stage, train=False))
        return DataLoader(
            plain,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn(stage),
            shuffle=False,
        )

    def pixels_of(self, stage: str, indices: Sequence[int]) -> torch.Tensor:
        """The normalised images of items ``indices`` of ``stage``, as its batches hold them."""
        dataset = self.dataset(stage)
        if not isinstance(dataset, ImageDataset):
            raise ValueError(f"This data module has no {stage} data.")
        pixels = dataset.with_pipeline(dataset.pipeline)
        return self.collate_fn(stage)([pixels[i] for i in indices])["input"]

    def show_batch(self, stage: str = "train") -> Any:
        """One batch of ``stage`` as the task receives it (after augmentation and normalisation)."""
        return next(iter(self._loader(stage)))

    describe_limit = 200
    """Training images whose size :meth:`describe` reads, at most (spread evenly over the split)."""

    def describe(self) -> dict[str, Any]:
        """Image width and height (min, median, max) over at most :attr:`describe_limit` training
        images: a file's size is read from its header, an array's from its shape; images that
        cannot be sized are skipped."""
        from flash.core.data.describe import number_summary

        train = self.splits.get("train")
        if train is None or len(train) == 0:
            return {}
        count = min(len(train), self.describe_limit)
        positions = np.unique(np.linspace(0, len(train) - 1, count).round().astype(int))
        sizes = [size for i in positions if (size := _image_size(train.inputs[i])) is not None]
        if not sizes:
            return {"images sized": f"0 of {len(positions)} sampled (none could be read)"}
        return {
            "image width": number_summary(w for w, _ in sizes),
            "image height": number_summary(h for _, h in sizes),
            "images sized": f"{len(sizes)} sampled of {len(train)} training images",
        }


def _array_items(data: Any, kind: str, what: str) -> list[Any]:
    """Split a stacked array/tensor (or a list of them) into one item per image, checking shapes."""
    if kind == "torch":
        if isinstance(data, torch.Tensor):
            if data.ndim not in (3, 4):
                raise ValueError(f"{what} has shape {tuple(data.shape)}; expected (N, C, H, W) or (N, H, W).")
            if data.ndim == 4 and data.shape[1] not in (1, 3, 4):
                raise ValueError(
                    f"{what} has shape {tuple(data.shape)}; tensors are channels-first (N, C, H, W) "
                    "with C = 1, 3 or 4."
                )
            items = list(data.cpu())
        else:
            items = list(data)
        for i, item in enumerate(items):
            if not isinstance(item, torch.Tensor):
                raise TypeError(f"{what}[{i}] is a {type(item).__name__}, not a tensor.")
    else:
        if isinstance(data, np.ndarray):
            if data.ndim not in (3, 4):
                raise ValueError(f"{what} has shape {data.shape}; expected (N, H, W) or (N, H, W, C).")
            if data.ndim == 4 and data.shape[-1] not in (1, 3, 4):
                raise ValueError(
                    f"{what} has shape {data.shape}; numpy images are channels-last (N, H, W, C) with "
                    "C = 1, 3 or 4."
                )
            items = list(data)
        else:
            items = [np.asarray(x) for x in data]
    if not items:
        raise ValueError(f"{what} is empty.")
    for i, item in enumerate(items):
        if np.issubdtype(np.asarray(item).dtype, np.floating) and not np.isfinite(np.asarray(item)).all():
            raise ValueError(f"{what}[{i}] has NaN or infinite pixel values.")
    return items


def _image_size(item: Any) -> tuple[int, int] | None:
    """``(width, height)`` of an image path (from its header), PIL image, channels-last array or
    channels-first tensor; ``None`` when it cannot be read."""
    from PIL import Image

    if isinstance(item, Image.Image):
        return item.size
    if isinstance(item, torch.Tensor):
        shape = tuple(item.shape)
        return (shape[-1], shape[-2]) if len(shape) in (2, 3) else None
    if isinstance(item, np.ndarray):
        return (item.shape[1], item.shape[0]) if item.ndim in (2, 3) else None
    if isinstance(item, str | os.PathLike):
        try:
            with Image.open(item) as image:
                return image.size
        except (OSError, ValueError, Image.DecompressionBombError):
            return None
    return None


__all__ = ["ImageClassificationData", "is_image_file"]
