"""``SemanticSegmentationData``: images and per-pixel class masks, from folders, file lists or arrays.

A mask is a single-channel image (a PNG file, or an ``(H, W)`` integer array) of the same size as
its image, holding one class index per pixel; ``ignore_index`` marks pixels that count for
nothing (void). Every mask is read and checked when the data module is built, before training:
sizes, channels, values, and images without masks (or masks without images) are named in the
error.

Joint transforms keep an image and its mask aligned: both are resized so their short side is
``image_size`` (bilinear for the image, nearest-neighbour for the mask), then training takes a
random scale and a random ``image_size`` square crop (padded with ``ignore_index`` where the
scaled image is smaller) and a random horizontal flip. Evaluation and prediction see the whole
resized image.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from flash.core.data.datamodule import DataModule, Split
from flash.core.data.splits import hold_out_validation
from flash.core.model.classification import check_num_classes
from flash.core.utils.validation import check_folder, check_int, check_optional_int
from flash.image.data import _array_items, _check_files, _default_preprocessing
from flash.image.dataset import CachedImageItems, DecodedImageCache
from flash.image.io import BadImageError, image_size_of, list_images, predict_folder_images, read_any
from flash.image.transforms import ImageCollate

DEFAULT_IGNORE_INDEX = 255
"""The void label when none is given (Pascal VOC's)."""

DEFAULT_SCALE_RANGE = (0.75, 1.25)
"""Range of the random rescaling of training images, relative to ``image_size``."""

CLASSES_FILE = "classes.txt"


# -- reading and checking masks ---------------------------------------------------------------------
class MaskError(ValueError):
    """A mask that cannot be used; ``what`` names it."""


def _mask_array(array: np.ndarray, what: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        colour = array[..., :3]
        if (colour == colour[..., :1]).all():  # a grey mask saved as RGB
            array = colour[..., 0]
        else:
            raise MaskError(
                f"{what} is a colour (RGB) image; a mask holds one class index per pixel. Convert colour "
                "masks with flash.image.segmentation.colour_mask_to_indices(mask, palette) (palette: the "
                "colour of each class, in class order) and save the result as a single-channel PNG."
            )
    if array.ndim != 2:
        raise MaskError(
            f"{what} has shape {tuple(array.shape)}; a mask is (H, W): one class index per pixel."
        )
    if array.size == 0:
        raise MaskError(f"{what} is empty.")
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not (array == np.round(array)).all():
            raise MaskError(f"{what} holds values that are not whole numbers; a mask holds class indices.")
        array = array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise MaskError(f"{what} has dtype {array.dtype}; a mask holds integer class indices.")
    if array.min(initial=0) < 0:
        raise MaskError(f"{what} holds negative values; a mask holds class indices >= 0.")
    return array.astype(np.uint8) if array.max(initial=0) < 256 else array.astype(np.int32)


def read_mask(item: Any, what: str = "mask") -> np.ndarray:
    """A mask (PNG path, PIL image, ``(H, W)`` array or tensor) as an ``(H, W)`` integer array.

    Raises:
        MaskError: for a colour mask (with how to convert it), a non-integer or negative mask.
        BadImageError: for a file that is missing or not an image.
    """
    if isinstance(item, str | os.PathLike):
        path = str(item)
        if not os.path.isfile(path):
            raise BadImageError(path, "the file does not exist.")
        try:
            with Image.open(path) as image:
                image.load()
                array = np.array(image)
        except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise BadImageError(path, f"not a readable image ({error}).") from None
        return _mask_array(array, f"Mask {path}")
    if isinstance(item, Image.Image):
        return _mask_array(np.array(item), what)
    if isinstance(item, torch.Tensor):
        return _mask_array(item.detach().cpu().numpy(), what)
    if isinstance(item, np.ndarray):
        return _mask_array(item, what)
    raise TypeError(
        f"{what} is a {type(item).__name__}; a mask is a file path, a PIL image, an array or a tensor."
    )


def colour_mask_to_indices(mask: Any, palette: Sequence[Sequence[int]] | Mapping[int, Sequence[int]],
                           ignore_index: int = DEFAULT_IGNORE_INDEX) -> np.ndarray:  # fmt: skip
    """Turn a colour mask (``(H, W, 3)`` array, RGB PIL image or path) into class indices.

    Args:
        palette: the RGB colour of each class: a list (class ``i`` has ``palette[i]``) or a dict
            ``{class index: colour}``.
        ignore_index: what pixels of a colour not in ``palette`` become.

    Returns:
        An ``(H, W)`` uint8 array (int32 when there are more than 256 classes), ready to save as a PNG.
    """
    if isinstance(mask, str | os.PathLike):
        with Image.open(mask) as image:
            mask = np.array(image.convert("RGB"))
    array = np.asarray(mask.convert("RGB") if isinstance(mask, Image.Image) else mask)
    if array.ndim != 3 or array.shape[-1] < 3:
        raise ValueError(f"A colour mask is (H, W, 3), got shape {tuple(array.shape)}.")
    colours = dict(palette) if isinstance(palette, Mapping) else dict(enumerate(palette))
    if not colours:
        raise ValueError("palette is empty; give the RGB colour of each class.")
    dtype = np.uint8 if max(max(colours), ignore_index) < 256 else np.int32
    out = np.full(array.shape[:2], ignore_index, dtype=dtype)
    rgb = array[..., :3].astype(np.int32)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    for index, colour in colours.items():
        r, g, b = (int(c) for c in colour)
        out[code == ((r << 16) | (g << 8) | b)] = index
    return out


def _size_of(item: Any) -> tuple[int, int]:
    """(height, width) of an image or mask item, from the header for files."""
    if isinstance(item, str | os.PathLike):
        width, height = image_size_of(item)
        return height, width
    if isinstance(item, Image.Image):
        return item.size[1], item.size[0]
    shape = tuple(np.shape(item))
    if isinstance(item, torch.Tensor) and len(shape) == 3 and shape[0] in (1, 3, 4):
        return shape[1], shape[2]
    return shape[0], shape[1]


def _show(item: Any, index: int, what: str) -> str:
    return str(item) if isinstance(item, str | os.PathLike) else f"{what} item {index}"


def check_pairs(
    images: Sequence[Any],
    masks: Sequence[Any],
    what: str,
    num_classes: int | None,
    ignore_index: int,
) -> int:
    """Read every mask of a split and check it against its image; return the largest class index
    seen (``ignore_index`` left out, -1 if none).

    Raises:
        ValueError: listing every problem (sizes, colour masks, values out of range, unreadable files).
    """
    if len(images) != len(masks):
        raise ValueError(
            f"{len(images)} {what} images but {len(masks)} {what} masks; give one mask per image."
        )
    problems: list[str] = []
    largest = -1
    for index, (image, mask_item) in enumerate(zip(images, masks)):
        name = _show(image, index, what)
        try:
            mask = read_mask(mask_item, f"{what} mask {index}")
            image_size = _size_of(image)
        except (MaskError, BadImageError, TypeError) as error:
            problems.append(str(error))
            continue
        if tuple(mask.shape) != tuple(image_size):
            problems.append(
                f"{name}: the image is {image_size[1]}x{image_size[0]} (WxH) but its mask "
                f"{_show(mask_item, index, what + ' mask')} is {mask.shape[1]}x{mask.shape[0]}; "
                "a mask must have its image's size."
            )
            continue
        values = np.unique(mask)
        values = values[values != ignore_index]
        if num_classes is not None:
            bad = values[values >= num_classes]
            if len(bad):
                shown = ", ".join(str(int(v)) for v in bad[:10])
                problems.append(
                    f"{_show(mask_item, index, what + ' mask')} holds value(s) {shown}, outside [0, {num_classes}) "
                    f"and not ignore_index={ignore_index}. If {int(bad[0])} marks void pixels pass "
                    f"ignore_index={int(bad[0])}; otherwise num_classes (or the class names) must cover it."
                )
                continue
        if len(values):
            largest = max(largest, int(values.max()))
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ValueError(f"{len(problems)} {what} mask problem(s):\n  {shown}{more}")
    return largest


def pair_by_stem(image_folder: Any, mask_folder: Any, what: str) -> tuple[list[str], list[str]]:
    """Images of ``image_folder`` and masks of ``mask_folder`` paired by file stem (``a.jpg`` with ``a.png``)."""
    image_path = check_folder(image_folder, f"{what}_folder")
    mask_path = check_folder(mask_folder, f"{what}_target_folder")
    images = list_images(image_path, recursive=True)
    masks = list_images(mask_path, recursive=True)
    if not images:
        raise ValueError(f"{what}_folder {str(image_folder)!r} holds no images.")
    if not masks:
        raise ValueError(f"{what}_target_folder {str(mask_folder)!r} holds no masks (PNG images).")

    def by_stem(files: list[str], root: Path, kind: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for file in files:
            key = str(Path(file).relative_to(root).with_suffix(""))
            if key in found:
                raise ValueError(
                    f"{kind} {found[key]} and {file} have the same name apart from the extension; "
                    "images and masks are paired by name, so each name must be unique."
                )
            found[key] = file
        return found

    image_by_stem = by_stem(images, image_path, "Images")
    mask_by_stem = by_stem(masks, mask_path, "Masks")
    no_mask = sorted(set(image_by_stem) - set(mask_by_stem))
    no_image = sorted(set(mask_by_stem) - set(image_by_stem))
    if no_mask or no_image:
        lines = [f"image {image_by_stem[s]} has no mask in {mask_path}" for s in no_mask[:5]]
        lines += [f"mask {mask_by_stem[s]} has no image in {image_path}" for s in no_image[:5]]
        count = len(no_mask) + len(no_image)
        raise ValueError(
            f"{count} {what} file(s) without a partner (images and masks are paired by file name, "
            "e.g. images/0001.jpg with masks/0001.png):\n  " + "\n  ".join(lines)
        )
    stems = sorted(image_by_stem)
    return [image_by_stem[s] for s in stems], [mask_by_stem[s] for s in stems]


def find_classes_file(*folders: Any) -> Path | None:
    """The first ``classes.txt`` in one of ``folders`` or their parents (two levels up)."""
    seen: set[Path] = set()
    for folder in folders:
        if folder is None:
            continue
        path = Path(folder).resolve()
        for candidate in (path, path.parent, path.parent.parent):
            if candidate in seen:
                continue
            seen.add(candidate)
            if (candidate / CLASSES_FILE).is_file():
                return candidate / CLASSES_FILE
    return None


def read_classes_file(path: str | os.PathLike) -> list[str]:
    """Class names, one a line (blank lines skipped); line ``i`` names class ``i``."""
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path} names no classes; write one class name a line, class 0 first.")
    return names


def _labels_from_map(labels_map: Any) -> list[str]:
    if isinstance(labels_map, Mapping):
        keys = sorted(labels_map)
        if keys != list(range(len(keys))):
            raise ValueError(
                f"labels_map keys must be the class indices 0..{len(keys) - 1}, got {keys[:20]}."
            )
        return [str(labels_map[k]) for k in keys]
    if isinstance(labels_map, str) or not isinstance(labels_map, Sequence):
        raise TypeError(
            f"labels_map must be a dict {{class index: name}} or a list of names, got {type(labels_map).__name__}."
        )
    return [str(name) for name in labels_map]


# -- joint transforms -------------------------------------------------------------------------------
def _resize_pair(image: torch.Tensor, mask: torch.Tensor | None, size: tuple[int, int]) -> tuple[Any, Any]:
    image = F.interpolate(
        image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True
    )
    image = image[0].round_().clamp_(0, 255).to(torch.uint8)
    if mask is not None:
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")[0, 0].to(mask.dtype)
    return image, mask


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) scaled so the shorter side is ``short_side``, keeping the aspect ratio."""
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


class SegmentationPipeline:
    """How one stage turns an (image, mask) pair into tensors.

    :meth:`load` decodes and resizes both to a short side of ``image_size`` (the same every epoch,
    so it is cached); :meth:`__call__` then augments training pairs (random scale, ``image_size``
    square crop, horizontal flip) and passes the others through.
    """

    def __init__(
        self,
        image_size: int,
        train: bool,
        ignore_index: int,
        scale_range: Sequence[float] = DEFAULT_SCALE_RANGE,
        hflip: float = 0.5,
    ) -> None:
        self.image_size = int(image_size)
        self.train = train
        self.ignore_index = int(ignore_index)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.hflip = float(hflip)

    def load(
        self, image: Any, mask: Any | None, what: str
    ) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
        """The decoded image ``(3, H, W)`` and mask ``(H, W)`` resized to a short side of
        ``image_size``, and the decoded image's own (height, width)."""
        rgb = torch.from_numpy(np.array(read_any(image, None, what), dtype=np.uint8)).permute(2, 0, 1)
        target = (
            torch.from_numpy(read_mask(mask, f"{what} mask").astype(np.int64)) if mask is not None else None
        )
        original = (int(rgb.shape[1]), int(rgb.shape[2]))
        size = short_side_size(*original, self.image_size)
        if size != original:
            rgb, target = _resize_pair(rgb, target, size)
        return rgb.numpy(), None if target is None else target.numpy().astype(np.int32), original

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        tensor = torch.from_numpy(image)
        target = None if mask is None else torch.from_numpy(mask).long()
        if not self.train:
            return tensor, target
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(()))
        height, width = tensor.shape[1:]
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        if size != (height, width):
            tensor, target = _resize_pair(tensor, target, size)
        crop = self.image_size
        pad_h, pad_w = max(0, crop - size[0]), max(0, crop - size[1])
        if pad_h or pad_w:
            tensor = F.pad(tensor, (0, pad_w, 0, pad_h), value=0)
            if target is not None:
                target = F.pad(target, (0, pad_w, 0, pad_h), value=self.ignore_index)
        top = int(torch.randint(0, tensor.shape[1] - crop + 1, ()))
        left = int(torch.randint(0, tensor.shape[2] - crop + 1, ()))
        tensor = tensor[:, top : top + crop, left : left + crop]
        if target is not None:
            target = target[top : top + crop, left : left + crop]
        if self.hflip and float(torch.rand(())) < self.hflip:
            tensor = tensor.flip(-1)
            target = None if target is None else target.flip(-1)
        return tensor.contiguous(), None if target is None else target.contiguous()


class SegmentationDataset(CachedImageItems):
    """Items ``{"index", "input", "target"}`` (predict items: ``{"index", "input", "size"}``).

    Decoded, resized pairs are kept in ``cache`` (when given), so each file is read once.
    """

    def __init__(
        self,
        inputs: Sequence[Any],
        targets: Sequence[Any] | None,
        pipeline: SegmentationPipeline,
        cache: DecodedImageCache | None = None,
        stage: str = "predict",
    ) -> None:
        super().__init__(inputs, None if targets is None else list(targets), pipeline, cache, stage)

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
        """Item ``index`` as :meth:`SegmentationPipeline.load` gives it (cached)."""
        item = self.inputs[index]
        key = (self.pipeline.image_size, str(item) if isinstance(item, str | os.PathLike) else id(item))
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        mask = None if self.targets is None else self.targets[index]
        pair = self.pipeline.load(item, mask, f"{self.stage} item {index}")
        if self.cache is not None:
            self.cache.put(key, _Cached(pair))
        return pair

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask, original = self.pair(index)
        image, mask = self.pipeline(image, mask)
        item: dict[str, Any] = {"index": index, "input": image}
        if mask is not None:
            item["target"] = mask
        else:
            item["size"] = original
        return item


class _Cached(tuple):
    """A decoded item as the image cache stores it (the cache bounds memory by ``nbytes``)."""

    @property
    def nbytes(self) -> int:
        return sum(part.nbytes for part in self[:2] if part is not None)


class SegmentationCollate:
    """Pad items to the largest of the batch and stack them; images are normalised here.

    Training and evaluation batches: ``{"index", "input": (N, 3, H, W), "target": (N, H, W)}``
    (padding is ``ignore_index``). Prediction batches: ``input`` is ``{"pixels": (N, 3, H, W),
    "sizes": (N, 4)}``, each row the resized height and width, then the original ones, so
    predictions can be cropped and resized back to each image's own size.
    """

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], ignore_index: int, channels_last: bool = True
    ) -> None:
        self.images = ImageCollate(mean, std, channels_last)
        self.ignore_index = int(ignore_index)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        height = max(int(item["input"].shape[-2]) for item in items)
        width = max(int(item["input"].shape[-1]) for item in items)

        def padded(tensor: torch.Tensor, value: int) -> torch.Tensor:
            pad_h, pad_w = height - tensor.shape[-2], width - tensor.shape[-1]
            return F.pad(tensor, (0, pad_w, 0, pad_h), value=value) if pad_h or pad_w else tensor

        pixels = self.images.normalize(torch.stack([padded(item["input"], 0) for item in items]))
        batch: dict[str, Any] = {"index": torch.tensor([item["index"] for item in items], dtype=torch.long)}
        if "target" in items[0]:
            batch["input"] = pixels
            batch["target"] = torch.stack([padded(item["target"], self.ignore_index) for item in items])
        else:
            sizes = [(*item["input"].shape[-2:], *item["size"]) for item in items]
            batch["input"] = {"pixels": pixels, "sizes": torch.tensor(sizes, dtype=torch.long)}
        return batch


# -- the data module --------------------------------------------------------------------------------
def _arrays_constructor(kind: str, doc: str) -> classmethod:
    """``from_numpy`` (``kind="numpy"``) or ``from_tensors`` (``"torch"``): one signature for both."""

    def constructor(
        cls: type[SemanticSegmentationData],
        train_data: Any = None,
        train_targets: Any = None,
        val_data: Any = None,
        val_targets: Any = None,
        test_data: Any = None,
        test_targets: Any = None,
        predict_data: Any = None,
        *,
        val_split: float | None = None,
        num_classes: int | None = None,
        labels_map: Mapping[int, str] | Sequence[str] | None = None,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        **kwargs: Any,
    ) -> SemanticSegmentationData:
        given = dict(locals())
        del given["cls"], given["kwargs"]
        return cls._from_arrays(kind, given, **kwargs)

    constructor.__name__ = constructor.__qualname__ = "from_tensors" if kind == "torch" else "from_numpy"
    constructor.__doc__ = doc
    return classmethod(constructor)


class SemanticSegmentationData(DataModule):
    """Images and their class masks for :class:`~flash.image.SemanticSegmentation`.

    Build it with :meth:`from_folders`, :meth:`from_files`, :meth:`from_numpy` or :meth:`from_tensors`.

    Args:
        num_classes: number of classes; default: the class names' count, else the largest class
            index in the training masks plus one.
        labels: class names, ``labels[i]`` naming class ``i``.
        ignore_index: the mask value of pixels that count for nothing (void); default 255.
        image_size: short side images are resized to (training crops are squares of this side);
            default: the task's backbone's (224).
        scale_range: range of the random rescaling of training images.
        hflip: probability of a random horizontal flip in training.
        cache_mb: memory bound of the decoded-image cache (default a quarter of RAM, at most
            4 GiB; ``0`` turns it off).
        batch_size, num_workers, seed: see :class:`flash.core.data.datamodule.DataModule`.
    """

    default_batch_size = 8

    def __init__(
        self,
        *splits: Split | None,
        num_classes: int | None = None,
        labels: Sequence[Any] | None = None,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        image_size: int | None = None,
        scale_range: Sequence[float] = DEFAULT_SCALE_RANGE,
        hflip: float = 0.5,
        cache_mb: float | None = None,
        **loading: Any,
    ) -> None:
        super().__init__(*splits, labels=labels, **loading)
        check_int(ignore_index, "ignore_index")
        if num_classes is not None:
            check_num_classes(num_classes, labels, minimum=2)
        check_optional_int(image_size, "image_size", 32, "pixels")
        scale = tuple(float(s) for s in scale_range)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range!r}.")
        if isinstance(hflip, bool) or not isinstance(hflip, int | float) or not 0 <= hflip <= 1:
            raise ValueError(f"hflip is a probability between 0 and 1, got {hflip!r}.")
        self.ignore_index = ignore_index
        self._num_classes = (
            num_classes if num_classes is not None else (len(labels) if labels is not None else None)
        )
        self.image_size = image_size
        self.scale_range = scale
        self.hflip = float(hflip)
        self.cache = DecodedImageCache.of_size(cache_mb)
        self.preprocessing = dict(_default_preprocessing())
        if image_size is not None:
            self.preprocessing["image_size"] = image_size
        self.channels_last = True

    @property
    def num_classes(self) -> int | None:
        """Number of classes (``None`` for prediction-only data)."""
        return self._num_classes

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def _from_pairs(
        cls,
        pairs: dict[str, tuple[list[Any], list[Any]] | None],
        predict: list[Any] | None,
        val_split: float | None,
        num_classes: int | None,
        labels: list[str] | None,
        ignore_index: int,
        **kwargs: Any,
    ) -> SemanticSegmentationData:
        """Check every pair and settle the classes; the one path every constructor takes."""
        if labels is not None and num_classes is not None and len(labels) != num_classes:
            raise ValueError(f"num_classes={num_classes} but {len(labels)} class names were given.")
        known = num_classes if num_classes is not None else (len(labels) if labels is not None else None)
        splits: dict[str, Split | None] = {"train": None, "val": None, "test": None}
        for name in ("train", "val", "test"):
            pair = pairs.get(name)
            if pair is None:
                continue
            images, masks = pair
            largest = check_pairs(images, masks, name, known, ignore_index)
            if known is None:
                if name != "train":
                    raise ValueError(
                        f"{name} data needs training data, num_classes= or labels_map= to define the classes."
                    )
                if largest < 1:
                    raise ValueError(
                        "The training masks hold fewer than two classes; pass num_classes= (or labels_map=) "
                        "if some classes are missing from them."
                    )
                known = largest + 1
            targets = np.empty(len(masks), dtype=object)
            targets[:] = list(masks)
            splits[name] = Split(list(images), targets)
        hold_out_validation(splits, val_split, kwargs.get("seed", 42))
        return cls(
            splits["train"],
            splits["val"],
            splits["test"],
            Split(list(predict)) if predict is not None else None,
            num_classes=known,
            labels=labels,
            ignore_index=ignore_index,
            **kwargs,
        )

    @classmethod
    def from_folders(
        cls,
        train_folder: str | os.PathLike | None = None,
        train_target_folder: str | os.PathLike | None = None,
        val_folder: str | os.PathLike | None = None,
        val_target_folder: str | os.PathLike | None = None,
        test_folder: str | os.PathLike | None = None,
        test_target_folder: str | os.PathLike | None = None,
        predict_folder: str | os.PathLike | None = None,
        *,
        val_split: float | None = None,
        num_classes: int | None = None,
        labels_map: Mapping[int, str] | Sequence[str] | None = None,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        **kwargs: Any,
    ) -> SemanticSegmentationData:
        """A folder of images and a folder of masks per split, paired by file name
        (``images/0001.jpg`` with ``masks/0001.png``; subfolders are searched).

        Class names come from ``labels_map`` (``{index: name}`` or a list), else from a
        ``classes.txt`` (one name a line, class 0 first) in the training mask folder or one or two
        levels above it; without either, classes are numbered.

        Args:
            train_folder, train_target_folder: training images and their masks (single-channel
                PNGs of class indices); likewise ``val_*`` and ``test_*``.
            predict_folder: images to predict on (no masks).
            val_split: fraction of the training pairs held out for validation.
            num_classes: number of classes (default: from the class names, else the masks).
            ignore_index: the mask value of void pixels.
            **kwargs: ``image_size``, ``batch_size``, ``scale_range``, ... (see the class).

        Raises:
            ValueError: for an empty folder, an image without a mask or the reverse, a mask whose
                size differs from its image's, a colour mask, or mask values outside
                ``[0, num_classes)`` other than ``ignore_index``.
        """
        pairs: dict[str, tuple[list[Any], list[Any]] | None] = {}
        for name, images, masks in (
            ("train", train_folder, train_target_folder),
            ("val", val_folder, val_target_folder),
            ("test", test_folder, test_target_folder),
        ):
            if (images is None) != (masks is None):
                given, missing = (
                    (f"{name}_folder", f"{name}_target_folder")
                    if masks is None
                    else (f"{name}_target_folder", f"{name}_folder")
                )
                raise ValueError(f"{given} needs {missing}: images and their masks come in two folders.")
            pairs[name] = None if images is None else pair_by_stem(images, masks, name)
        predict = predict_folder_images(predict_folder)
        labels = None
        if labels_map is not None:
            labels = _labels_from_map(labels_map)
        else:
            found = find_classes_file(train_target_folder, train_folder)
            labels = read_classes_file(found) if found is not None else None
        return cls._from_pairs(pairs, predict, val_split, num_classes, labels, ignore_index, **kwargs)

    @classmethod
    def from_files(
        cls,
        train_files: Sequence[str | os.PathLike] | None = None,
        train_targets: Sequence[str | os.PathLike] | None = None,
        val_files: Sequence[str | os.PathLike] | None = None,
        val_targets: Sequence[str | os.PathLike] | None = None,
        test_files: Sequence[str | os.PathLike] | None = None,
        test_targets: Sequence[str | os.PathLike] | None = None,
        predict_files: Sequence[str | os.PathLike] | None = None,
        *,
        val_split: float | None = None,
        num_classes: int | None = None,
        labels_map: Mapping[int, str] | Sequence[str] | None = None,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        **kwargs: Any,
    ) -> SemanticSegmentationData:
        """Lists of image files and their mask files (``train_targets[i]`` is the mask of ``train_files[i]``)."""
        pairs: dict[str, tuple[list[Any], list[Any]] | None] = {}
        for name, files, targets in (
            ("train", train_files, train_targets),
            ("val", val_files, val_targets),
            ("test", test_files, test_targets),
        ):
            if files is None and targets is None:
                pairs[name] = None
                continue
            if files is None or targets is None:
                raise ValueError(f"{name}_files and {name}_targets (their masks) come together.")
            pairs[name] = (_check_files(files, f"{name}_files"), _check_files(targets, f"{name}_targets"))
        predict = _check_files(predict_files, "predict_files") if predict_files is not None else None
        labels = _labels_from_map(labels_map) if labels_map is not None else None
        return cls._from_pairs(pairs, predict, val_split, num_classes, labels, ignore_index, **kwargs)

    from_numpy = _arrays_constructor(
        "numpy",
        """Images as numpy arrays ``(N, H, W, C)`` (or a list of ``(H, W[, C])``), masks as
        ``(N, H, W)`` integer arrays (or a list of ``(H, W)``).""",
    )
    from_tensors = _arrays_constructor(
        "torch",
        """Images as tensors ``(N, C, H, W)`` (or a list of ``(C, H, W)``), masks as ``(N, H, W)``
        integer tensors (or a list of ``(H, W)``).""",
    )

    @classmethod
    def _from_arrays(cls, kind: str, given: dict[str, Any], **kwargs: Any) -> SemanticSegmentationData:
        pairs: dict[str, tuple[list[Any], list[Any]] | None] = {}
        for name in ("train", "val", "test"):
            data, targets = given[f"{name}_data"], given[f"{name}_targets"]
            if data is None and targets is None:
                pairs[name] = None
                continue
            if data is None or targets is None:
                raise ValueError(f"{name}_data and {name}_targets (their masks) come together.")
            masks = list(targets.cpu()) if isinstance(targets, torch.Tensor) else list(targets)
            pairs[name] = (_array_items(data, kind, f"{name}_data"), masks)
        predict = (
            _array_items(given["predict_data"], kind, "predict_data")
            if given["predict_data"] is not None
            else None
        )
        labels = _labels_from_map(given["labels_map"]) if given["labels_map"] is not None else None
        return cls._from_pairs(
            pairs, predict, given["val_split"], given["num_classes"], labels, given["ignore_index"], **kwargs
        )

    # -- the task's preprocessing ---------------------------------------------------------------
    def attach_task(self, task: Any) -> None:
        """Check the task's classes and void label against the data's and take its normalisation
        (the data's ``image_size`` wins if given; the task takes it)."""
        super().attach_task(task)
        if hasattr(task, "attach_data"):
            task.attach_data(self.num_classes, self.labels, self.ignore_index)
        preprocessing = getattr(task, "preprocessing", None)
        if preprocessing:
            self.preprocessing = dict(preprocessing)
            if self.image_size is not None:
                self.preprocessing["image_size"] = self.image_size
                if hasattr(task, "set_image_size"):
                    task.set_image_size(self.image_size)
        self.channels_last = bool(getattr(task, "channels_last", True))

    # -- datasets and loaders -------------------------------------------------------------------
    def pipeline(self, stage: str, train: bool | None = None) -> SegmentationPipeline:
        augment = stage == "train" if train is None else train
        return SegmentationPipeline(
            self.preprocessing["image_size"], augment, self.ignore_index, self.scale_range, self.hflip
        )

    def make_dataset(self, split: Split, stage: str) -> SegmentationDataset:
        targets = None if split.targets is None else list(split.targets)
        return SegmentationDataset(split.inputs, targets, self.pipeline(stage), self.cache, stage)

    def collate_fn(self, stage: str) -> Callable[[list[Any]], Any]:
        return SegmentationCollate(
            self.preprocessing["mean"], self.preprocessing["std"], self.ignore_index, self.channels_last
        )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items() if v is not None)
        return (
            f"{type(self).__name__}({sizes}, num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"batch_size={self.batch_size})"
        )


__all__ = ["SemanticSegmentationData", "colour_mask_to_indices", "read_mask"]
