"""Shared benchmark plumbing: run a contender in its own process, time it, read its peak memory."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import resource
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any


def _child(fn: Callable[..., Any], args: tuple, queue: mp.Queue) -> None:
    try:
        start = time.perf_counter()
        result = fn(*args)
        seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        queue.put(("ok", result, seconds, peak_mb))
    except BaseException:  # the parent reports it
        queue.put(("error", traceback.format_exc(), 0.0, 0.0))


def run_isolated(fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """Run ``fn(*args)`` in a fresh process; return ``(result, wall_seconds, peak_rss_mb)``.

    A fresh process per contender keeps one's caches, threads and memory peak out of the
    other's numbers. ``fn`` must be importable (a module-level function).
    """
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(fn, args, queue))
    process.start()
    status, result, seconds, peak_mb = queue.get()
    process.join()
    if status != "ok":
        raise RuntimeError(f"{getattr(fn, '__name__', fn)} failed:\n{result}")
    return result, seconds, peak_mb


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print ``rows`` as an aligned text table (also valid Markdown)."""
    cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def quiet_contender(threads_variable: str) -> None:
    """Set a contender process up: torch threads from the environment variable ``threads_variable``
    (when set and non-zero), no warnings or Lightning info lines, flash quiet and offline."""
    threads = int(os.environ.get(threads_variable, "0"))
    if threads:
        import torch

        torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("FLASH_QUIET", "1")
