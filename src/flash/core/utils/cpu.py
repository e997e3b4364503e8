"""CPU settings that a training process benefits from.

glibc's allocator hands every block above 32 MiB back to the kernel when it is freed. A CNN's
activations are such blocks, so each training step maps and zero-fills hundreds of megabytes
of fresh pages: on a 2-core machine a tenth of a finetuning run went to page faults (system
time), measured in ``benchmarks/image_cpu.py``. :func:`reuse_freed_memory` keeps freed blocks in
the process for the next step instead. Peak memory is unchanged; the process just does not shrink
between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_ONE_GIB = 1 << 30
_applied = False


def reuse_freed_memory() -> bool:
    """Make glibc keep freed blocks up to 1 GiB for reuse (Linux with glibc only; idempotent).

    Returns:
        whether the setting is in effect.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, _ONE_GIB)) and bool(mallopt(_M_TRIM_THRESHOLD, _ONE_GIB))
    return _applied


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
