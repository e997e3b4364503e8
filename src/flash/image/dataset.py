"""The image dataset, and the in-memory cache of decoded images it reads from.

Decoding a JPEG costs more than augmenting it. When a split's decoded, resized images fit the
cache's bound, they are all decoded once, before training, on a thread pool (Pillow releases the
GIL while decoding); that pass also finds every corrupt or truncated file before the first step.
Later epochs only crop. Worker processes forked after the fill share the cached arrays.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from flash.core.utils.validation import check_number
from flash.image.io import BadImageError, first_lines, image_size_of
from flash.image.transforms import ImagePipeline

DEFAULT_CACHE_FRACTION = 0.25
DEFAULT_CACHE_CAP_MB = 4096


def default_cache_mb() -> int:
    """A quarter of the machine's memory, at most 4 GiB."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return int(min(DEFAULT_CACHE_CAP_MB, total * DEFAULT_CACHE_FRACTION / 2**20))


class DecodedImageCache:
    """Decoded images (uint8 arrays) in memory, up to ``limit_mb``; once full it stores nothing more."""

    def __init__(self, limit_mb: float | None = None) -> None:
        self.limit_bytes = int((default_cache_mb() if limit_mb is None else limit_mb) * 2**20)
        self._arrays: dict[Any, np.ndarray] = {}
        self.bytes = 0

    @classmethod
    def of_size(cls, cache_mb: float | None) -> DecodedImageCache | None:
        """The cache a data module's ``cache_mb`` asks for: None (a default bound), ``0`` (no cache,
        returned as None) or a number of megabytes."""
        if cache_mb is not None:
            check_number(cache_mb, "cache_mb", "[0, inf)")
        return cls(cache_mb) if cache_mb != 0 else None

    def get(self, key: Any) -> np.ndarray | None:
        return self._arrays.get(key)

    def put(self, key: Any, array: np.ndarray) -> bool:
        if key in self._arrays:
            return True
        if self.bytes + array.nbytes > self.limit_bytes:
            return False
        self._arrays[key] = array
        self.bytes += array.nbytes
        return True

    def fits(self, extra_bytes: int) -> bool:
        return self.bytes + extra_bytes <= self.limit_bytes

    def __len__(self) -> int:
        return len(self._arrays)


def estimated_bytes(items: Sequence[Any], pipeline: ImagePipeline) -> tuple[int, list[BadImageError]]:
    """Bytes the decoded images of ``items`` will take, from headers only; and the unreadable files."""
    total, bad = 0, []
    for item in items:
        if isinstance(item, str | os.PathLike):
            try:
                width, height = image_size_of(item)
            except BadImageError as error:
                bad.append(error)
                continue
        elif hasattr(item, "size") and isinstance(getattr(item, "size", None), tuple):  # PIL
            width, height = item.size
        else:
            shape = np.shape(item)
            height, width = (shape[-2], shape[-1]) if len(shape) == 3 and shape[0] in (1, 3, 4) else shape[:2]
        if pipeline.fit_size:
            scale = pipeline.fit_size / max(1, min(width, height))
            width, height = round(width * scale), round(height * scale)
        total += int(width) * int(height) * 3
    return total, bad


class CachedImageItems(Dataset):
    """The items of one split, their decoded images kept in a shared :class:`DecodedImageCache`.

    Args:
        inputs: paths, PIL images, arrays or tensors.
        targets: encoded targets or ``None``.
        pipeline: decoding and resizing for this stage (its ``key`` names its output in the cache).
        cache: where decoded images are kept (``None``: decode every time).
        stage: the split's name, for messages.
    """

    def __init__(
        self,
        inputs: Sequence[Any],
        targets: Any,
        pipeline: Any,
        cache: DecodedImageCache | None = None,
        stage: str = "predict",
    ) -> None:
        self.inputs = list(inputs)
        self.targets = targets
        self.pipeline = pipeline
        self.cache = cache
        self.stage = stage

    def __len__(self) -> int:
        return len(self.inputs)

    def _key(self, index: int) -> tuple[Any, ...]:
        item = self.inputs[index]
        identity = str(item) if isinstance(item, str | os.PathLike) else id(item)
        return (self.pipeline.key, identity)


class ImageDataset(CachedImageItems):
    """Items ``{"index", "input", "target"}`` of one split.

    Args:
        inputs: paths, PIL images, arrays or tensors.
        targets: encoded targets or ``None``.
        pipeline: decoding and cropping for this stage.
        cache: where decoded images are kept (``None``: decode every time).
        stage: the split's name, part of the cache key.

    Attributes:
        pixels: when ``False``, items carry no image (their backbone features come from the
            data module's frozen-feature cache instead); seen by loader workers too.
        token: identifies this dataset's items, for caches keyed by item index.
    """

    def __init__(
        self,
        inputs: Sequence[Any],
        targets: np.ndarray | None,
        pipeline: ImagePipeline,
        cache: DecodedImageCache | None = None,
        stage: str = "predict",
    ) -> None:
        super().__init__(inputs, targets, pipeline, cache, stage)
        # Shared memory: loader workers (persistent ones too) hold copies of this dataset, and
        # must see the switch the main process makes between epochs.
        self._pixels = torch.ones((), dtype=torch.bool).share_memory_()
        self.token = uuid.uuid4().hex

    @property
    def pixels(self) -> bool:
        """Whether items carry their image; ``False`` while the backbone's features are cached."""
        return bool(self._pixels)

    @pixels.setter
    def pixels(self, on: bool) -> None:
        self._pixels.fill_(bool(on))

    def array(self, index: int) -> np.ndarray:
        """The decoded (and, for the default crops, resized) image of item ``index``."""
        if self.cache is not None:
            cached = self.cache.get(self._key(index))
            if cached is not None:
                return cached
        array = self.pipeline.load(self.inputs[index], what=f"{self.stage} item {index}")
        if self.cache is not None:
            self.cache.put(self._key(index), array)
        return array

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"index": int(index)}
        if self.targets is not None:
            item["target"] = self.targets[index]
        if self.pixels:
            item["input"] = self.pipeline(self.array(index), index)  # a SampleIndex keys the augmentation
        return item

    def with_pipeline(self, pipeline: ImagePipeline, stage: str | None = None) -> ImageDataset:
        """The same items read through another pipeline (sharing the cache)."""
        return ImageDataset(self.inputs, self.targets, pipeline, self.cache, stage or self.stage)

    def prefill(self, skip_bad: bool = False, threads: int | None = None) -> list[int]:
        """Decode every item into the cache if they all fit; find unreadable files.

        Returns:
            the indices of unreadable items (only with ``skip_bad``; otherwise they raise).

        Raises:
            ValueError: listing every unreadable file, unless ``skip_bad``.
        """
        size, bad = estimated_bytes(self.inputs, self.pipeline)
        bad_paths = {e.path for e in bad}
        if self.cache is not None and self.cache.fits(size):
            threads = threads or min(8, os.cpu_count() or 1)

            def decode(index: int) -> BadImageError | None:
                if isinstance(self.inputs[index], str | os.PathLike) and str(self.inputs[index]) in bad_paths:
                    return None
                try:
                    self.array(index)
                except BadImageError as error:
                    return error
                return None

            with ThreadPoolExecutor(max_workers=threads) as pool:
                bad += [e for e in pool.map(decode, range(len(self))) if e is not None]
        if not bad:
            return []
        if not skip_bad:
            raise ValueError(
                f"{len(bad)} {self.stage} image(s) cannot be read:\n{first_lines(bad)}\n"
                "Fix or remove them, or pass on_bad_image='skip' (flash finetune: --on-bad-image skip) "
                "to leave them out with a warning."
            )
        warnings.warn(
            f"Leaving out {len(bad)} unreadable {self.stage} image(s):\n{first_lines(bad)}", stacklevel=2
        )
        paths = {e.path for e in bad}
        return [
            i
            for i, item in enumerate(self.inputs)
            if isinstance(item, str | os.PathLike) and str(item) in paths
        ]
