"""Small summaries of a data set's numbers, for :meth:`~flash.core.data.datamodule.DataModule.describe`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def number_summary(values: Iterable[float], percentiles: Sequence[float] = (50,)) -> dict[str, float]:
    """``min``, the given percentiles (``50`` is named ``median``, others ``p95`` ...) and ``max``.

    Args:
        values: the numbers (at least one).
        percentiles: the percentiles to report, each in ``[0, 100]``.

    Whole numbers stay ``int`` where every value is one (``min``, ``max``; percentiles
    interpolate, so they stay whole only when they land on one).
    """
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        raise ValueError("number_summary needs at least one value.")
    if not np.isfinite(array).all():
        raise ValueError("number_summary takes finite numbers only; drop NaN and infinite values first.")
    for q in percentiles:
        if not 0 <= q <= 100:
            raise ValueError(f"percentile {q!r} is outside [0, 100].")
    summary: dict[str, float] = {"min": _plain(array.min())}
    for q in percentiles:
        name = "median" if q == 50 else f"p{q:g}"
        summary[name] = _plain(np.percentile(array, q))
    summary["max"] = _plain(array.max())
    return summary


def _plain(value: float) -> float:
    value = float(value)
    return int(value) if value.is_integer() else round(value, 4)
