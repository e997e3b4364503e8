"""CPU settings that a training run benefits from, scoped to that run.

glibc's allocator hands every block above 32 MiB back to the kernel when it is freed. A CNN's
activations are such blocks, so each training step maps and zero-fills hundreds of megabytes
of fresh pages: on a 2-core machine a tenth of a finetuning run went to page faults (system
time), measured in ``benchmarks/image_cpu.py``. :func:`reuse_freed_memory` keeps freed blocks in
the process for the next step instead. Peak memory is unchanged; the process just does not shrink
between steps.

The allocator's settings belong to the whole process, so flash changes them only for the length
of a fit (:class:`FreedMemoryReuse`) and :func:`release_freed_memory` ends the change. glibc
cannot report its current thresholds, so the end cannot restore "what they were": it sets them
to the values glibc's own adaptive thresholds settle at (32 MiB for mmap, 64 MiB for trimming,
on 64-bit systems) and returns the kept memory to the system with ``malloc_trim``. The one thing
that does not come back is the adaptation itself (glibc turns it off for good at the first
``mallopt``): blocks under 32 MiB are then always served from the heap, as an adapted process
serves them. A process started with its own allocator settings (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_`` or ``glibc.malloc``
tunables in ``GLIBC_TUNABLES``) is left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterator
from typing import Any

from lightning.pytorch.callbacks import Callback

__all__ = ["FreedMemoryReuse", "freed_memory_reused", "release_freed_memory", "reuse_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_ONE_GIB = 1 << 30
# glibc's DEFAULT_MMAP_THRESHOLD_MAX: the ceiling its adaptive mmap threshold climbs to (32 MiB on
# 64-bit systems); the adaptive trim threshold follows at twice the mmap threshold.
_ADAPTED_MMAP_THRESHOLD = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)
_ADAPTED_TRIM_THRESHOLD = 2 * _ADAPTED_MMAP_THRESHOLD
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_active = False


def _glibc() -> Any | None:
    """glibc, when this process runs on it and its allocator has not been tuned by the user."""
    if not sys.platform.startswith("linux"):
        return None
    if any(name in os.environ for name in _USER_SETTINGS) or "glibc.malloc." in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 -- both exist only in glibc
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None
    return libc


def reuse_freed_memory() -> bool:
    """Make glibc keep freed blocks up to 1 GiB for reuse, until :func:`release_freed_memory`
    (Linux with glibc only; calling it again while in effect changes nothing).

    Returns:
        whether the setting is in effect.
    """
    global _active
    if _active:
        return True
    libc = _glibc()
    if libc is None:
        return False
    _active = bool(libc.mallopt(_M_MMAP_THRESHOLD, _ONE_GIB)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _ONE_GIB)
    )
    return _active


def release_freed_memory() -> bool:
    """End :func:`reuse_freed_memory`: thresholds back to glibc's adapted values and the memory
    kept for reuse returned to the system.

    Returns:
        whether there was a setting to end.
    """
    global _active
    if not _active:
        return False
    _active = False
    libc = _glibc()
    if libc is None:  # the environment changed since; the thresholds stay as they are
        return False
    libc.mallopt(_M_MMAP_THRESHOLD, _ADAPTED_MMAP_THRESHOLD)
    libc.mallopt(_M_TRIM_THRESHOLD, _ADAPTED_TRIM_THRESHOLD)
    libc.malloc_trim(0)
    return True


@contextlib.contextmanager
def freed_memory_reused() -> Iterator[bool]:
    """:func:`reuse_freed_memory` inside a ``with`` block; yields whether it is in effect.

    A block entered while the setting is already in effect leaves it to whoever started it.
    """
    started = not _active and reuse_freed_memory()
    try:
        yield _active
    finally:
        if started:
            release_freed_memory()


class FreedMemoryReuse(Callback):
    """:func:`reuse_freed_memory` for the length of a fit on the CPU: from ``on_fit_start`` to
    ``on_fit_end``, or to the exception that ends the fit early."""

    def __init__(self) -> None:
        self._started = False

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._started = pl_module.device.type == "cpu" and not _active and reuse_freed_memory()

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._end()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._end()

    def _end(self) -> None:
        if self._started:
            self._started = False
            release_freed_memory()


def return_freed_memory() -> bool:
    """Hand freed heap memory back to the kernel now (glibc's ``malloc_trim``; Linux with glibc only).

    For a process that owns its memory use, such as a server after a request that decoded large
    images: without it the process stays at its peak size. Returns whether anything was returned.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        malloc_trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(malloc_trim(0))
