"""From a decoded image to the batch a backbone takes.

Two steps per image, so the expensive one can be cached:

1. :meth:`ImagePipeline.load`: decode and resize so the short side is ``image_size / crop_pct``
   (256 for a 224 backbone): an 8-bit RGB array, the same every epoch, cached by the data module.
2. :meth:`ImagePipeline.__call__`: training takes a random-resized crop and a random horizontal
   flip of that array; evaluation and prediction take its centre ``image_size`` square.

:class:`ImageCollate` stacks the 8-bit crops and normalises them with the backbone's mean and std
in one vectorised step. A user's transform (any callable on a PIL image, e.g. a torchvision
``Compose``) replaces step 2 and the resize of step 1; its output may be a PIL image, an 8-bit
tensor (normalised by the collate) or a float tensor (taken as final).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from flash.core.data.randomness import item_seed, item_uniforms, sample_key
from flash.image.io import read_any, resize_short_side

UserTransform = Callable[[Image.Image], Any]

DEFAULT_CROP_SCALE = (0.8, 1.0)
"""Area range of training crops. torchvision's (0.08, 1) suits training from scratch; a
pretrained backbone finetuned for a few epochs, starting from a linear probe fitted on centre
crops, does better with mild crops. (0.8, 1) beat (0.6, 1) on both the ants-vs-bees photos and
scikit-learn's digits; (0.9, 1) helped the photos a little more but cost the digits
(``benchmarks/image_crop_scale.py``; the numbers are in docs/image.md)."""

_CROP_ATTEMPTS = 10  # as torchvision's RandomResizedCrop
_DRAWS_PER_ITEM = _CROP_ATTEMPTS * 4 + 1  # (area, ratio, top, left) per attempt, then the flip
CROP_RATIO = (3 / 4, 4 / 3)
"""Aspect-ratio range (width / height) of training crops, as torchvision's RandomResizedCrop."""

_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
_INTERPOLATION = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC}


def resize_size(preprocessing: dict[str, Any]) -> int:
    """Short side images are resized to before cropping: ``image_size / crop_pct``."""
    return round(preprocessing["image_size"] / preprocessing.get("crop_pct", 0.875))


class ImagePipeline:
    """How one stage turns an item (path, PIL image, array, tensor) into a crop.

    Args:
        preprocessing: the backbone's ``image_size``, ``mean``, ``std``, ``crop_pct``, ``interpolation``.
        train: random-resized crop and flip (training) or centre crop (everything else).
        transform: a user's transform on the RGB PIL image; replaces the crops.
        crop_scale: area range of training crops.
        hflip: probability of a horizontal flip in training.
    """

    def __init__(
        self,
        preprocessing: dict[str, Any],
        train: bool,
        transform: UserTransform | None = None,
        crop_scale: Sequence[float] = DEFAULT_CROP_SCALE,
        hflip: float = 0.5,
    ) -> None:
        self.preprocessing = preprocessing
        self.train = train
        self.transform = transform
        self.hflip = float(hflip)
        size = int(preprocessing["image_size"])
        self.image_size = size
        self.interpolation = preprocessing.get("interpolation", "bilinear")
        self.resample = _RESAMPLE.get(self.interpolation, Image.BILINEAR)
        self.fit_size = None if transform is not None else resize_size(preprocessing)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))

    @property
    def key(self) -> tuple[Any, ...]:
        """What the output of :meth:`load` depends on: cached arrays are valid while it is equal."""
        return (self.fit_size, self.resample if self.fit_size else None)

    def load(self, item: Any, what: str = "image") -> np.ndarray:
        """Decode ``item`` to an (H, W, 3) uint8 array, resized for cropping unless a user transform runs."""
        image = read_any(item, self.fit_size, what)
        if self.fit_size is not None:
            image = resize_short_side(image, self.fit_size, self.resample)
        return np.array(image, dtype=np.uint8)  # writable: torch.from_numpy needs that

    def __call__(self, array: np.ndarray, index: Any = None) -> Any:
        """The crop (or the user transform's output) of a decoded image.

        Args:
            array: the image from :meth:`load`.
            index: the item's index. A :class:`~flash.core.data.randomness.SampleIndex` (what the
                training sampler yields) makes the random crop and flip a function of
                ``(seed, epoch, index)``, the same in any worker and as on the GPU path; with a
                plain index they are drawn from torch's global random state.
        """
        key = sample_key(index)
        if self.transform is not None:
            image = Image.fromarray(array)
            if key is None or not self.train:
                return self.transform(image)
            with torch.random.fork_rng(devices=[]):  # the user's torch draws, keyed like ours
                torch.manual_seed(item_seed(*key))
                return self.transform(image)
        tensor = torch.from_numpy(array).permute(2, 0, 1)
        if not self.train:
            return center_crop(tensor, self.image_size, self.interpolation)
        if key is None:
            draws = torch.rand(_DRAWS_PER_ITEM, dtype=torch.float64).numpy()[None]
        else:
            seed, epoch, item = key
            draws = item_uniforms(seed, epoch, np.array([item]), _DRAWS_PER_ITEM)
        box = random_resized_crop_boxes(np.array([tensor.shape[-2:]]), draws, self.crop_scale, CROP_RATIO)
        top, left, height, width = box[0].tolist()
        tensor = F.resized_crop(
            tensor,
            top,
            left,
            height,
            width,
            [self.image_size, self.image_size],
            interpolation=_INTERPOLATION[self.interpolation],
            antialias=True,
        )
        if draws[0, -1] < self.hflip:
            tensor = tensor.flip(-1)
        return tensor.contiguous()


def random_resized_crop_boxes(
    sizes: np.ndarray,
    uniforms: np.ndarray,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """Crop boxes ``(top, left, height, width)`` per image, with torchvision's RandomResizedCrop rule.

    Args:
        sizes: ``(N, 2)`` image heights and widths.
        uniforms: ``(N, >= 40)`` numbers in ``[0, 1)``: 10 attempts of (area, aspect, top, left).
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height).
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    height, width = sizes[:, :1], sizes[:, 1:2]
    u = np.asarray(uniforms)[:, : _CROP_ATTEMPTS * 4].reshape(len(sizes), _CROP_ATTEMPTS, 4)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(log_low + (log_high - log_low) * u[..., 1])
    crop_w = np.round(np.sqrt(area * aspect))
    crop_h = np.round(np.sqrt(area / aspect))
    fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    top = np.floor(u[..., 2] * (height - crop_h + 1))
    left = np.floor(u[..., 3] * (width - crop_w + 1))
    first = fits.argmax(axis=1)
    rows = np.arange(len(sizes))
    boxes = np.stack([top[rows, first], left[rows, first], crop_h[rows, first], crop_w[rows, first]], axis=1)
    failed = ~fits.any(axis=1)
    if failed.any():
        boxes[failed] = _central_fallback(sizes[failed], ratio)
    return boxes.astype(np.int64)


def _central_fallback(sizes: np.ndarray, ratio: tuple[float, float]) -> np.ndarray:
    height, width = sizes[:, 0], sizes[:, 1]
    in_ratio = width / height
    crop_w = np.where(
        in_ratio < ratio[0], width, np.where(in_ratio > ratio[1], np.round(height * ratio[1]), width)
    )
    crop_h = np.where(in_ratio < ratio[0], np.round(width / ratio[0]), height)
    return np.stack([(height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w], axis=1)


def center_crop(tensor: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """The centre ``size`` x ``size`` square of a (C, H, W) tensor, resized first if it is smaller."""
    height, width = tensor.shape[-2:]
    if min(height, width) < size:
        tensor = F.resize(tensor, size, interpolation=_INTERPOLATION[interpolation], antialias=True)
    return F.center_crop(tensor, [size, size]).contiguous()


def to_batch_tensor(value: Any) -> torch.Tensor:
    """One transformed item as a (C, H, W) tensor (PIL images become uint8 tensors)."""
    if isinstance(value, Image.Image):
        return torch.from_numpy(np.asarray(value.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
        if value.ndim == 3 and value.shape[-1] in (1, 3) and value.shape[0] not in (1, 3):
            value = value.permute(2, 0, 1)
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"An image transform returned a {type(value).__name__}; return a tensor or PIL image."
        )
    return value


class ImageCollate:
    """Stack items into a batch; 8-bit images are normalised with ``mean``/``std`` here.

    Args:
        mean, std: the backbone's normalisation of pixel values in [0, 1].
        channels_last: lay the batch out as NHWC in memory (faster convolutions on CPUs).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels_last: bool = True) -> None:
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.channels_last = channels_last

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            scale = torch.tensor([1 / (255 * s) for s in self.std]).view(1, -1, 1, 1)
            shift = torch.tensor([m / s for m, s in zip(self.mean, self.std)]).view(1, -1, 1, 1)
            images = images.float().mul_(scale).sub_(shift)
        elif not images.is_floating_point():
            raise TypeError(f"Image batches must be uint8 or float, got {images.dtype}.")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"index": torch.tensor([item["index"] for item in items], dtype=torch.long)}
        if "input" in items[0]:
            images = [to_batch_tensor(item["input"]) for item in items]
            shapes = {tuple(t.shape) for t in images}
            if len(shapes) > 1:
                raise ValueError(
                    f"Images of one batch have different shapes {sorted(shapes)[:4]}; a custom transform "
                    "must return images of one size (e.g. end it with Resize and CenterCrop)."
                )
            batch["input"] = self.normalize(torch.stack(images))
        if "target" in items[0]:
            batch["target"] = torch.as_tensor(np.stack([item["target"] for item in items]))
        return batch
