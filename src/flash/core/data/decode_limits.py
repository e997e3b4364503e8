"""Limits on how much memory decoding inputs may take: pixels per image, per request, at once.

A 16 KB PNG can declare 10,000 x 10,000 pixels and cost 300 MB once decoded, so image
decoding checks the size in the file's header against these limits *before* decoding.

The limits in force are held in a context variable: :func:`decode_limits` sets them for a
block of code (``predict()`` on large files, one request of a server), and decoding code reads
them with :func:`current_decode_limits`. Outside any block the defaults apply.

- ``max_image_pixels``: the most pixels one image may decode to (after any reduced-scale
  decoding, such as JPEG's DCT scaling); larger images are refused unread.
- ``max_total_pixels``: the most pixels all images decoded inside the block may hold after
  they were resized for the model (``None``: no limit). A server sets it per request.
- ``budget``: a :class:`PixelBudget` shared by several blocks (a server's requests): the most
  pixels being decoded at the same moment across threads. A decode waits for room.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
"""50 megapixels: 8K video frames and most camera files; a larger image is refused unread."""


def _check_limit(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")


class InputTooLargeError(ValueError):
    """An input over one of the decode limits; ``limit`` names the option, ``value`` its setting."""

    def __init__(self, message: str, limit: str, value: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value


class PixelBudget:
    """A count of pixels being decoded right now, shared between threads; :meth:`reserve` waits for room.

    Args:
        capacity: the most pixels decoded at once. One image is never larger than the
            ``max_image_pixels`` of its limits, which must not exceed ``capacity``.
    """

    def __init__(self, capacity: int) -> None:
        _check_limit("capacity", capacity)
        self.capacity = capacity
        self._used = 0
        self._free = threading.Condition()

    @property
    def used(self) -> int:
        return self._used

    @contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` of the budget while the block runs (waiting until that many are free)."""
        pixels = min(max(int(pixels), 0), self.capacity)
        with self._free:
            self._free.wait_for(lambda: self._used + pixels <= self.capacity)
            self._used += pixels
        try:
            yield
        finally:
            with self._free:
                self._used -= pixels
                self._free.notify_all()


class DecodeLimits:
    """The decode limits of one block of work (see the module docstring); counts what it decoded."""

    def __init__(
        self,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_total_pixels: int | None = None,
        budget: PixelBudget | None = None,
    ) -> None:
        _check_limit("max_image_pixels", max_image_pixels)
        if max_total_pixels is not None:
            _check_limit("max_total_pixels", max_total_pixels)
        if budget is not None and budget.capacity < max_image_pixels:
            raise ValueError(
                f"The pixel budget ({budget.capacity}) is smaller than max_image_pixels ({max_image_pixels}); "
                "one image could never be decoded."
            )
        self.max_image_pixels = max_image_pixels
        self.max_total_pixels = max_total_pixels
        self.budget = budget
        self.decoded_pixels = 0
        """Pixels decoded so far (before any resizing): a measure of the memory the block churned."""
        self.held_pixels = 0
        """Pixels of the images handed on (after resizing), counted against ``max_total_pixels``."""
        self._lock = threading.Lock()

    def check_image(self, width: int, height: int, what: str = "The image") -> None:
        """Refuse an image whose decoded size would be over ``max_image_pixels``."""
        pixels = width * height
        if pixels > self.max_image_pixels:
            raise InputTooLargeError(
                f"{what} is {width}x{height} = {pixels:,} pixels, over the limit of "
                f"max_image_pixels={self.max_image_pixels:,}; send a smaller image (or raise the limit).",
                "max_image_pixels",
                self.max_image_pixels,
            )

    @contextmanager
    def decoding(self, width: int, height: int) -> Iterator[None]:
        """Hold ``width * height`` pixels of the shared budget (if any) while the block decodes."""
        with self._lock:
            self.decoded_pixels += width * height
        if self.budget is None:
            yield
        else:
            with self.budget.reserve(width * height):
                yield

    def hold(self, width: int, height: int, what: str = "The image") -> None:
        """Count an image handed on; refuse it when the total passes ``max_total_pixels``."""
        with self._lock:
            total = self.held_pixels + width * height
            if self.max_total_pixels is not None and total > self.max_total_pixels:
                raise InputTooLargeError(
                    f"{what} brings the images of this request to {total:,} pixels after resizing, over "
                    f"the limit of max_request_pixels={self.max_total_pixels:,}; send fewer or smaller "
                    "images per request.",
                    "max_request_pixels",
                    self.max_total_pixels,
                )
            self.held_pixels = total


_DEFAULT = DecodeLimits()
_current: ContextVar[DecodeLimits | None] = ContextVar("flash_decode_limits", default=None)


def current_decode_limits() -> DecodeLimits:
    """The limits in force here: those of the innermost :func:`decode_limits` block, else the defaults."""
    limits = _current.get()
    return _DEFAULT if limits is None else limits


@contextmanager
def decode_limits(
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_total_pixels: int | None = None,
    budget: PixelBudget | None = None,
) -> Iterator[DecodeLimits]:
    """Decode under these limits inside the ``with`` block (this thread and tasks it starts).

    Example: ``with decode_limits(max_image_pixels=200_000_000): task.predict("huge.png")``.
    With ``DataLoader`` workers started by ``spawn`` the limits do not reach the workers; they
    use the defaults.
    """
    limits = DecodeLimits(max_image_pixels, max_total_pixels, budget)
    token = _current.set(limits)
    try:
        yield limits
    finally:
        _current.reset(token)
