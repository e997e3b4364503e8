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
from statistics import mean, stdev
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


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` as ``[0, 1, 2]``; ValueError unless they are distinct whole numbers >= 0."""
    seeds = [int(part) for part in text.split(",") if part.strip()]
    if not seeds or any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(text)
    return seeds


def spread(values: list[float], digits: int) -> str:
    """``mean ± sd`` (sample standard deviation; just the value for one run)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{mean(values):.{digits}f} ± {stdev(values):.{digits}f}"


def seed_summary(
    rows: list[dict[str, Any]], names: list[str], columns: list[tuple[str, int]]
) -> list[dict[str, Any]]:
    """One row per contender of ``names``: ``mean ± sd`` over its per-seed ``rows`` of each
    ``(column, digits)`` in ``columns``."""
    out = []
    for name in names:
        mine = [r for r in rows if r["contender"] == name]
        row: dict[str, Any] = {"contender": name, "seeds": len(mine)}
        for column, digits in columns:
            values = [r[column] for r in mine if r.get(column, "") != ""]
            row[column] = spread(values, digits) if values else ""
        out.append(row)
    return out


def run_per_seed(
    seeds: list[int],
    contenders: list[tuple[str, Callable[..., Any]]],
    arguments: Callable[[int], tuple],
    metrics: Callable[[Any], dict[str, Any]],
    baseline: str,
) -> list[dict[str, Any]]:
    """Run each ``(name, fn)`` of ``contenders`` once per seed, a seed's contenders back to back
    (so a change in the machine's load falls on all of them), each with ``fn(*arguments(seed))``
    in its own process (:func:`run_isolated`; ``fn`` returns its CPU seconds as ``cpu_s``).

    Returns one row per run: ``seed``, ``contender``, ``metrics(result)``, ``wall s``, ``cpu s``,
    ``peak MB`` and ``wall / hand-written`` (the wall time over that seed's ``baseline`` run's).
    Each row is printed as it comes, with the load average.
    """
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        seed_rows, walls = [], []
        for name, fn in contenders:
            start = time.strftime("%H:%M:%S")
            result, seconds, peak_mb = run_isolated(fn, *arguments(seed))
            walls.append(seconds)
            row = {
                "seed": seed,
                "contender": name,
                **metrics(result),
                "wall s": round(seconds, 1),
                "cpu s": round(result["cpu_s"], 1),
                "peak MB": round(peak_mb),
            }
            seed_rows.append(row)
            print(f"[{start}] {row} (load average {os.getloadavg()[0]:.1f})", flush=True)
        reference = next((w for r, w in zip(seed_rows, walls) if r["contender"] == baseline), None)
        for row, wall in zip(seed_rows, walls):
            row["wall / hand-written"] = round(wall / reference, 2) if reference else ""
        rows += seed_rows
    return rows
