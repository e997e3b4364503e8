"""An image input path that keeps a GPU busy: JPEG decoding and augmentation on the device, in batches.

Loader workers only read each file's bytes (and check its header); the main process decodes a
whole batch of JPEGs with one ``torchvision.io.decode_jpeg(list, device="cuda")`` call (nvJPEG),
crops, resizes, flips and normalises on the GPU, and hands the model a channels-last batch in
the training dtype. A :class:`~flash.core.data.device_loader.DeviceLoader` runs decoding and
augmentation as two stages in background threads, each on its own CUDA stream, so while the
model trains on one batch the next is augmented and the one after decoded.

Files that nvJPEG does not take (PNG, GIF, CMYK JPEGs, ...) are decoded by PIL in the workers,
as the CPU path does. The same code runs with ``device="cpu"`` (``decode_jpeg`` decodes on the
CPU too), which is how it is tested without a GPU.

Augmentation depends only on ``(seed, epoch, item index)``: not on the batch an item lands in,
the number of workers, or what ran before.
"""

from __future__ import annotations

import functools
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from flash.core.data.device_loader import DeviceLoader
from flash.core.utils.validation import check_int, check_optional_int
from flash.image.io import BadImageError, open_image
from flash.image.transforms import (
    _DRAWS_PER_ITEM,
    DEFAULT_CROP_SCALE,
    item_uniforms,
    random_resized_crop_boxes,
)

DEVICE_DECODABLE = {("JPEG", "RGB"), ("JPEG", "L"), ("MPO", "RGB"), ("MPO", "L")}
"""(PIL format, PIL mode) of files decoded on the device; everything else is decoded by PIL."""

INTERPOLATIONS = ("bilinear", "bicubic")


# -- reading (in loader workers) -------------------------------------------------------------------
_EXIF_ORIENTATION = 0x0112


def probe_image(data: bytes, path: str = "<bytes>") -> int | None:
    """The EXIF orientation (1-8) of a JPEG that nvJPEG decodes, or ``None`` for any other image.

    Reads only the header. Raises :class:`~flash.image.io.BadImageError` naming ``path`` when the
    bytes are not an image.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            if (image.format, image.mode) not in DEVICE_DECODABLE:
                return None
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception as error:  # PIL raises many types for foreign bytes
        raise BadImageError(path, f"not an image file, or a damaged one ({error}).") from None
    return orientation if orientation in range(1, 9) else 1


def apply_orientation(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Turn a decoded ``(C, H, W)`` image upright, as ``PIL.ImageOps.exif_transpose`` does."""
    rows, cols = -2, -1
    if orientation == 2:
        return image.flip(cols)
    if orientation == 3:
        return image.flip(rows, cols)
    if orientation == 4:
        return image.flip(rows)
    if orientation == 5:
        return image.transpose(rows, cols)
    if orientation == 6:
        return image.rot90(-1, dims=(rows, cols))
    if orientation == 7:
        return image.transpose(rows, cols).flip(rows, cols)
    if orientation == 8:
        return image.rot90(1, dims=(rows, cols))
    return image


def decode_on_cpu(path: str) -> torch.Tensor:
    """Decode any image file as the CPU path does (:func:`flash.image.io.open_image`): RGB ``uint8`` ``(3, H, W)``."""
    array = np.asarray(open_image(path), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


@dataclass
class EncodedBatch:
    """A batch as loader workers make it: raw JPEG bytes, plus images PIL already decoded.

    Attributes:
        indices: dataset index of each item (what augmentation is keyed on).
        paths: file of each item (for error messages).
        data: the JPEG files' bytes, back to back; ``offsets[k]:offsets[k + 1]`` is file ``k``.
        offsets: ``len(device_positions) + 1`` byte offsets into ``data``.
        device_positions: batch positions of the files in ``data`` (decoded on the device).
        orientations: EXIF orientation of each file in ``data``.
        decoded: RGB ``uint8`` ``(3, H, W)`` images decoded on the CPU by PIL.
        decoded_positions: batch positions of ``decoded``.
        targets: the items' targets, or ``None`` (prediction).
    """

    indices: torch.Tensor
    paths: list[str]
    data: torch.Tensor
    offsets: list[int]
    device_positions: list[int]
    orientations: list[int] = field(default_factory=list)
    decoded: list[torch.Tensor] = field(default_factory=list)
    decoded_positions: list[int] = field(default_factory=list)
    targets: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def pin_memory(self) -> EncodedBatch:
        """Page-locked copies, so copies to the GPU can be non-blocking (the DataLoader calls this)."""
        return EncodedBatch(
            self.indices.pin_memory(),
            self.paths,
            self.data.pin_memory(),
            self.offsets,
            self.device_positions,
            self.orientations,
            [image.pin_memory() for image in self.decoded],
            self.decoded_positions,
            None if self.targets is None else self.targets.pin_memory(),
        )


class EncodedImageDataset(Dataset):
    """Image files as raw bytes; files nvJPEG cannot decode come back decoded by PIL.

    Args:
        paths: image files.
        targets: one target per file (class indices, or multi-hot rows), or ``None``.
    """

    def __init__(
        self, paths: Sequence[str | os.PathLike], targets: np.ndarray | Sequence | None = None
    ) -> None:
        if isinstance(paths, str | os.PathLike | bytes) or not hasattr(paths, "__iter__"):
            raise TypeError(f"paths must be a list of image files, got {type(paths).__name__}.")
        paths = list(paths)
        bad = [p for p in paths if not isinstance(p, str | os.PathLike)]
        if bad:
            raise TypeError(
                f"paths must be image files (str or Path); got {type(bad[0]).__name__}. "
                "Images given as arrays or PIL images take the CPU input path."
            )
        self.paths = [os.fspath(p) for p in paths]
        self.targets = None if targets is None else np.asarray(targets)
        if self.targets is not None and len(self.targets) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(self.targets)} targets; give one per file.")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise BadImageError(path, f"the file cannot be read ({error.strerror or error}).") from None
        item: dict[str, Any] = {"index": index, "path": path}
        orientation = probe_image(data, path)
        if orientation is not None:
            item["data"], item["orientation"] = data, orientation
        else:
            item["image"] = decode_on_cpu(path)
        if self.targets is not None:
            item["target"] = self.targets[index]
        return item


def collate_encoded(items: Sequence[dict[str, Any]]) -> EncodedBatch:
    """Pack items of :class:`EncodedImageDataset` into one :class:`EncodedBatch` (one byte buffer)."""
    if not items:
        raise ValueError("Cannot collate an empty batch.")
    device_positions = [i for i, item in enumerate(items) if "data" in item]
    sizes = [len(items[i]["data"]) for i in device_positions]
    offsets = [0, *np.cumsum(sizes, dtype=np.int64).tolist()]
    data = torch.empty(offsets[-1], dtype=torch.uint8)
    flat = data.numpy()
    for position, start, end in zip(device_positions, offsets[:-1], offsets[1:]):
        flat[start:end] = np.frombuffer(items[position]["data"], dtype=np.uint8)
    decoded_positions = [i for i, item in enumerate(items) if "image" in item]
    targets = None
    if "target" in items[0]:
        targets = torch.as_tensor(np.stack([np.asarray(item["target"]) for item in items]))
    return EncodedBatch(
        indices=torch.tensor([item["index"] for item in items], dtype=torch.int64),
        paths=[item["path"] for item in items],
        data=data,
        offsets=offsets,
        device_positions=device_positions,
        orientations=[items[i]["orientation"] for i in device_positions],
        decoded=[items[i]["image"] for i in decoded_positions],
        decoded_positions=decoded_positions,
        targets=targets,
    )


# -- decoding (on the device) ----------------------------------------------------------------------
def _decode_jpeg(data: torch.Tensor | list[torch.Tensor], device: torch.device) -> Any:
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def _decode_one(data: torch.Tensor, path: str, orientation: int, device: torch.device) -> torch.Tensor:
    try:
        return apply_orientation(_decode_jpeg(data, device), orientation)
    except RuntimeError:
        pass  # nvJPEG and libjpeg refuse some files PIL reads; the CPU path has the last word
    return decode_on_cpu(path).to(device)


def decode_batch(batch: EncodedBatch, device: torch.device | str) -> list[torch.Tensor]:
    """Every image of ``batch`` as an RGB ``uint8`` ``(3, H, W)`` tensor on ``device``.

    The JPEGs are decoded by one batched ``decode_jpeg`` call and turned upright by their EXIF
    orientation. If the call fails (one bad file fails the whole batch), each file is decoded on
    its own, and a file no decoder reads raises :class:`~flash.image.io.BadImageError` naming it.
    """
    device = torch.device(device)
    images: list[torch.Tensor | None] = [None] * len(batch)
    if batch.device_positions:
        starts, ends = batch.offsets[:-1], batch.offsets[1:]
        encoded = [batch.data[start:end] for start, end in zip(starts, ends)]
        try:
            decoded = [
                apply_orientation(image, orientation)
                for image, orientation in zip(_decode_jpeg(encoded, device), batch.orientations)
            ]
        except RuntimeError:
            paths = [batch.paths[p] for p in batch.device_positions]
            decoded = [_decode_one(*args, device) for args in zip(encoded, paths, batch.orientations)]
        for position, image in zip(batch.device_positions, decoded):
            images[position] = image
    for position, image in zip(batch.decoded_positions, batch.decoded):
        images[position] = image.to(device, non_blocking=True)
    missing = [batch.paths[i] for i, image in enumerate(images) if image is None]
    if missing:
        raise ValueError(f"The batch holds no image data for {', '.join(missing[:5])}.")
    return images  # type: ignore[return-value]


def resized_size(height: int, width: int, shorter_side: int) -> tuple[int, int]:
    """Size after resizing the shorter side to ``shorter_side``, rounding as the CPU path does
    (:func:`flash.image.transforms.resize_short_side`)."""
    scale = shorter_side / min(height, width)
    return max(shorter_side, round(height * scale)), max(shorter_side, round(width * scale))


# -- the transform ------------------------------------------------------------------------------------
def _pair(value: Any, name: str) -> tuple[int, int]:
    values = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, Sequence) else ()
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name} must be a whole number >= 1 or a (height, width) pair, got {value!r}.")
    return values  # type: ignore[return-value]


def _range(value: Any, name: str, low: float, high: float) -> tuple[float, float]:
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int | float) and low < v <= high for v in value)
        or value[0] > value[1]
    ):
        raise ValueError(
            f"{name} must be an increasing (low, high) pair within ({low}, {high}], got {value!r}."
        )
    return float(value[0]), float(value[1])


def _channels(value: Any, name: str, positive: bool) -> list[float]:
    values = (
        [value] * 3 if isinstance(value, int | float) else list(value) if isinstance(value, Sequence) else []
    )
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be one number or three (R, G, B), got {value!r}.")
    if positive and min(values) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}.")
    if max(abs(v) for v in values) > 1:
        raise ValueError(
            f"{name} is on the 0-1 scale of pixel values (ImageNet's mean is 0.485, ...), got {value!r}."
        )
    return [float(v) for v in values]


class DeviceImageTransform:
    """Decode, crop, resize, flip and normalise an :class:`EncodedBatch` on ``device``.

    The same transforms as the CPU path (:class:`flash.image.transforms.ImagePipeline`). Training:
    torchvision's RandomResizedCrop rule (area range ``scale``, default
    :data:`~flash.image.transforms.DEFAULT_CROP_SCALE`) and a horizontal flip, per image.
    Evaluation: resize the shorter side to ``round(image_size / crop_pct)`` and take the centre
    crop. Resizing is antialiased (like PIL's).

    Args:
        image_size: output size, ``S`` or ``(height, width)``.
        mean, std: the backbone's normalisation, on the 0-1 scale.
        train: random augmentation (``True``) or the evaluation transform.
        device: where to decode and transform (default: ``cuda`` when available).
        seed: augmentation seed; augmentation is a function of ``(seed, epoch, item index)``.
        scale, ratio, hflip: RandomResizedCrop's area and aspect ranges, flip probability.
        crop_pct: fraction of the resized image the evaluation centre crop keeps.
        interpolation: ``"bilinear"`` or ``"bicubic"``.
        dtype: dtype of the output batch (``torch.bfloat16`` under bf16 mixed precision).
        channels_last: output memory format; default: channels-last on CUDA.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        *,
        train: bool,
        device: torch.device | str | None = None,
        seed: int = 0,
        scale: Sequence[float] = DEFAULT_CROP_SCALE,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        crop_pct: float = 0.875,
        interpolation: str = "bilinear",
        dtype: torch.dtype = torch.float32,
        channels_last: bool | None = None,
    ) -> None:
        self.image_size = _pair(image_size, "image_size")
        self.mean = _channels(mean, "mean", positive=False)
        self.std = _channels(std, "std", positive=True)
        self.scale = _range(scale, "scale", 0.0, 1.0)
        self.ratio = _range(ratio, "ratio", 0.0, math.inf)
        if not isinstance(hflip, int | float) or not 0 <= hflip <= 1:
            raise ValueError(f"hflip is a probability between 0 and 1, got {hflip!r}.")
        if not isinstance(crop_pct, int | float) or not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct!r}.")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}."
            )
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(
                f"dtype must be a floating torch dtype (torch.float32, torch.bfloat16), got {dtype!r}."
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be a whole number, got {seed!r}.")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.train = bool(train)
        self.seed = seed
        self.hflip = float(hflip)
        self.crop_pct = float(crop_pct)
        self.interpolation = interpolation
        self.dtype = dtype
        self.channels_last = self.device.type == "cuda" if channels_last is None else bool(channels_last)
        self._offset = torch.tensor([255.0 * m for m in self.mean], device=self.device).view(1, 3, 1, 1)
        self._scale = torch.tensor([1.0 / (255.0 * s) for s in self.std], device=self.device).view(1, 3, 1, 1)

    @property
    def resize_size(self) -> int:
        """Shorter side of the resized image the evaluation centre crop is taken from."""
        return round(max(self.image_size) / self.crop_pct)

    def crop_parameters(
        self, sizes: np.ndarray, indices: np.ndarray, epoch: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Training crop boxes ``(top, left, height, width)`` and flip flags for images of ``sizes``."""
        uniforms = item_uniforms(self.seed, epoch, indices, _DRAWS_PER_ITEM)
        boxes = random_resized_crop_boxes(sizes, uniforms, self.scale, self.ratio)
        flips = uniforms[:, -1] < self.hflip
        return boxes, flips

    @property
    def stages(self) -> list[Callable[[Any, int], Any]]:
        """The two steps a :class:`DeviceLoader` overlaps across batches: decoding, then augmentation."""
        return [self.decode, self.augment]

    def __call__(self, batch: EncodedBatch, epoch: int = 0) -> dict[str, torch.Tensor]:
        """The model's batch ``{"index", "input", "target"}``, as the CPU path's collate makes it
        (no ``"target"`` when the items have none)."""
        return self.augment(self.decode(batch, epoch), epoch)

    def decode(self, batch: EncodedBatch, epoch: int = 0) -> dict[str, Any]:
        """Stage 1: ``{"images": [upright uint8 (3, H, W) on the device], "indices", "index", "target"}``."""
        if not isinstance(batch, EncodedBatch):
            raise TypeError(f"Expected an EncodedBatch (from collate_encoded), got {type(batch).__name__}.")
        decoded: dict[str, Any] = {
            "images": decode_batch(batch, self.device),
            "indices": batch.indices,
            "index": batch.indices.to(self.device, non_blocking=True),
        }
        if batch.targets is not None:
            decoded["target"] = batch.targets.to(self.device, non_blocking=True)
        return decoded

    def augment(self, decoded: dict[str, Any], epoch: int = 0) -> dict[str, torch.Tensor]:
        """Stage 2: crop, resize, flip and normalise the decoded images into one batch tensor."""
        images = decoded["images"]
        if self.train:
            pixels = self._train_crops(images, decoded["indices"].numpy(), epoch)
        else:
            pixels = self._eval_crops(images)
        pixels = pixels.sub_(self._offset).mul_(self._scale)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        out = {"index": decoded["index"], "input": pixels.to(dtype=self.dtype, memory_format=memory_format)}
        if "target" in decoded:
            out["target"] = decoded["target"]
        return out

    def _resize(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        resized = F.interpolate(
            image.unsqueeze(0).float(),
            size=size,
            mode=self.interpolation,
            align_corners=False,
            antialias=True,
        )
        return resized.clamp_(0, 255) if self.interpolation == "bicubic" else resized

    def _train_crops(self, images: list[torch.Tensor], indices: np.ndarray, epoch: int) -> torch.Tensor:
        sizes = np.array([image.shape[-2:] for image in images], dtype=np.int64)
        boxes, flips = self.crop_parameters(sizes, indices, epoch)
        crops = []
        for image, (top, left, height, width), flip in zip(images, boxes.tolist(), flips.tolist()):
            crop = self._resize(image[:, top : top + height, left : left + width], self.image_size)
            crops.append(crop.flip(-1) if flip else crop)
        return torch.cat(crops)

    def _eval_crops(self, images: list[torch.Tensor]) -> torch.Tensor:
        out_h, out_w = self.image_size
        crops = []
        for image in images:
            new_h, new_w = resized_size(image.shape[-2], image.shape[-1], self.resize_size)
            resized = self._resize(image, (new_h, new_w))
            top, left = round((new_h - out_h) / 2.0), round((new_w - out_w) / 2.0)
            crops.append(resized[:, :, top : top + out_h, left : left + out_w])
        return torch.cat(crops)


# -- building the loader -----------------------------------------------------------------------------
def default_reader_workers() -> int:
    """Loader processes for the device path: they only read bytes, so a few suffice (max 8)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cpus - 1))


def device_image_loader(
    paths: Sequence[str | os.PathLike],
    targets: np.ndarray | Sequence | None,
    transform: DeviceImageTransform,
    *,
    batch_size: int,
    num_workers: int | None = None,
    sampler: Sampler[int] | None = None,
    drop_last: bool = False,
    prefetch: int = 2,
    background: bool | None = None,
) -> DeviceLoader:
    """A loader of ready batches ``{"input", "target"}`` on ``transform.device`` from image files.

    Args:
        paths, targets: the files and their targets (``targets=None`` for prediction).
        transform: what happens on the device (training or evaluation transform).
        batch_size: images per batch.
        num_workers: reader processes; default :func:`default_reader_workers`.
        sampler: item order (e.g. :class:`~flash.core.data.datamodule.EpochShuffleSampler`), or a batch
            sampler (one with a ``batch_size``); default: in order.
        drop_last: drop the last, smaller batch (keeps shapes static for ``torch.compile``).
        prefetch: batches waiting between the stages (decoding, augmentation, the model).
        background: run decoding and augmentation in background threads (default: on CUDA).
    """
    check_int(batch_size, "batch_size", 1)
    check_optional_int(num_workers, "num_workers", 0)
    workers = default_reader_workers() if num_workers is None else num_workers
    if not isinstance(transform, DeviceImageTransform):
        raise TypeError(f"transform must be a DeviceImageTransform, got {type(transform).__name__}.")
    dataset = EncodedImageDataset(paths, targets)
    if len(dataset) == 0:
        raise ValueError("No image files given.")
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs["persistent_workers"] = True
    generator = getattr(sampler, "generator", None)
    if isinstance(generator, torch.Generator):
        kwargs["generator"] = generator
    if sampler is not None and hasattr(sampler, "batch_size"):  # a batch sampler makes its own batches
        kwargs["batch_sampler"] = sampler
    else:
        kwargs.update(batch_size=batch_size, sampler=sampler, drop_last=drop_last)
    loader = DataLoader(
        dataset,
        num_workers=workers,
        collate_fn=collate_encoded,
        pin_memory=transform.device.type == "cuda",
        **kwargs,
    )
    return DeviceLoader(loader, transform.stages, transform.device, prefetch=prefetch, background=background)


def gpu_loader_for(
    datamodule: Any,
    stage: str,
    preprocessing: dict[str, Any] | None = None,
    *,
    enabled: bool | None = None,
    device: torch.device | str | None = None,
    **augmentation: Any,
) -> DeviceLoader | None:
    """The device input path for one stage of an image data module, or ``None`` where it does not apply.

    The hook an image data module calls from ``_loader(stage)``, falling back to the CPU path on
    ``None``. It applies when the stage's inputs are all image files, no custom (PIL) transform is
    set, unreadable images are not to be skipped, and the module's trainer runs on a single CUDA
    device whose ``decode_jpeg`` works. A file that cannot be read raises when its batch is
    decoded, naming the file.
    Batches come out in the trainer's precision (bf16 under ``"bf16-mixed"``), channels-last.

    Args:
        datamodule: a :class:`~flash.core.data.datamodule.DataModule`; its splits, batch size, workers, seed,
            training sampler and trainer are used, and, where it has them, ``preprocessing``,
            ``crop_scale``, ``channels_last``, ``transform``, ``train_transform`` and ``on_bad_image``.
        stage: ``"train"``, ``"val"``, ``"test"`` or ``"predict"``.
        preprocessing: the backbone's ``image_size``, ``mean``, ``std`` and, optionally,
            ``crop_pct`` and ``interpolation``; default: ``datamodule.preprocessing``.
        enabled: ``False`` never uses it; ``True`` raises when it cannot be used; ``None`` uses
            it whenever it applies.
        device: run on this device instead of the trainer's (``"cpu"`` runs the same code, for tests).
        **augmentation: ``scale`` (default ``datamodule.crop_scale``), ``ratio``, ``hflip`` of the
            training crop and flip.
    """
    if enabled is False:
        return None
    split = datamodule.splits.get(stage)
    reason = _why_not(datamodule, split, stage, device)
    if reason is not None:
        if enabled:
            raise RuntimeError(f"The GPU input path cannot be used for the {stage} data: {reason}.")
        return None
    preprocessing = preprocessing if preprocessing is not None else getattr(datamodule, "preprocessing", None)
    if not isinstance(preprocessing, Mapping) or not {"image_size", "mean", "std"} <= set(preprocessing):
        raise ValueError(
            "gpu_loader_for needs the backbone's preprocessing: a dict with image_size, mean and std "
            f"(pass preprocessing=..., or give the data module a .preprocessing); got {preprocessing!r}."
        )
    trainer = getattr(datamodule, "trainer", None)
    train = stage == "train"
    options = {k: preprocessing[k] for k in ("crop_pct", "interpolation") if k in preprocessing}
    if train:
        if getattr(datamodule, "crop_scale", None) is not None:
            options["scale"] = datamodule.crop_scale
        options.update(augmentation)
    transform = DeviceImageTransform(
        preprocessing["image_size"],
        preprocessing["mean"],
        preprocessing["std"],
        train=train,
        device=torch.device(device) if device is not None else trainer.strategy.root_device,
        seed=datamodule.seed,
        dtype=input_dtype_for_precision(getattr(trainer, "precision", "32-true")),
        channels_last=getattr(datamodule, "channels_last", None),
        **options,
    )
    sampler = datamodule.train_sampler(range(len(split))) if train else None
    return device_image_loader(
        split.inputs,
        split.targets,
        transform,
        batch_size=datamodule.batch_size,
        num_workers=datamodule.num_workers,
        sampler=sampler,
    )


def _why_not(datamodule: Any, split: Any, stage: str, device: torch.device | str | None) -> str | None:
    if split is None:
        return "there is no such data"
    if not all(isinstance(item, str | os.PathLike) for item in split.inputs):
        return "its inputs are not all image files (arrays and PIL images take the CPU path)"
    custom = getattr(datamodule, "train_transform", None) if stage == "train" else None
    if (custom or getattr(datamodule, "transform", None)) is not None:
        return "a custom transform is set, and it runs on PIL images on the CPU"
    if getattr(datamodule, "on_bad_image", "error") == "skip":
        return "on_bad_image='skip' decodes every image once before training, which the CPU path does"
    if device is not None:
        return None
    trainer = getattr(datamodule, "trainer", None)
    if trainer is None:
        return "the data module is not attached to a trainer"
    root = trainer.strategy.root_device
    if root.type != "cuda":
        return f"the trainer runs on {root.type}, not on a CUDA GPU"
    if trainer.world_size > 1:
        return "it feeds one GPU; with several, each process would read every file"
    if not gpu_decoding_available(str(root)):
        return "torchvision's decode_jpeg does not work on this GPU (built without nvJPEG?)"
    return None


@functools.lru_cache(maxsize=8)
def gpu_decoding_available(device: str = "cuda") -> bool:
    """Whether ``device`` is a CUDA device whose ``decode_jpeg`` (nvJPEG) works in this install."""
    if not torch.cuda.is_available() or torch.device(device).type != "cuda":
        return False
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG")
    try:
        data = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
        image = _decode_jpeg([data], torch.device(device))[0]
        return tuple(image.shape) == (3, 16, 16)
    except (RuntimeError, OSError):
        return False


def input_dtype_for_precision(precision: Any) -> torch.dtype:
    """The dtype of model inputs for a Lightning ``precision`` setting.

    bf16 inputs under ``"bf16-mixed"`` (autocast runs convolutions in bf16 anyway, so this halves
    the input's memory traffic and skips a cast); the weights' dtype under ``"*-true"``; float32
    otherwise.
    """
    text = str(precision)
    if text.startswith("bf16"):
        return torch.bfloat16
    if text in ("16-true", "16", "half"):
        return torch.float16
    if text in ("64-true", "64", "64-bit"):
        return torch.float64
    return torch.float32


class CudaSpeedups(Callback):
    """On CUDA, put a task's weights in channels-last memory format and optionally compile it.

    Channels-last lets cuDNN run convolutions without layout transposes (it pairs with the
    channels-last batches of :class:`DeviceImageTransform`). ``compile=True`` compiles the
    backbone in place (``nn.Module.compile``), so checkpoints keep their parameter names. Does
    nothing on other devices.

    Args:
        channels_last: convert 4-D weights to channels-last.
        compile: ``torch.compile`` the task's ``backbone`` (or the whole task if it has none).
        compile_kwargs: passed to ``torch.compile`` (e.g. ``{"mode": "max-autotune"}``).
    """

    def __init__(
        self, channels_last: bool = True, compile: bool = False, compile_kwargs: dict | None = None
    ) -> None:
        self.channels_last = bool(channels_last)
        self.compile = bool(compile)
        self.compile_kwargs = dict(compile_kwargs or {})
        self._compiled: set[int] = set()

    def _apply(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type != "cuda":
            return
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
        backbone = getattr(pl_module, "backbone", None)
        target = backbone if isinstance(backbone, torch.nn.Module) else pl_module
        if self.compile and id(target) not in self._compiled:
            target.compile(**self.compile_kwargs)
            self._compiled.add(id(target))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(pl_module)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(pl_module)
