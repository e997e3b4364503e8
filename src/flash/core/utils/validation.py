"""Argument checks shared by every public function, so each mistake gets the same message everywhere.

``True`` is refused wherever a count is expected (``batch_size=True`` is a bug, not a batch of
one), and so are floats, strings and numbers out of range.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any


def check_int(value: Any, name: str, minimum: int = 0, unit: str = "") -> int:
    """``value`` as an ``int`` when it is a whole number ``>= minimum`` (never a bool).

    Args:
        value: what the caller passed.
        name: the argument's name, as the caller wrote it.
        minimum: the smallest accepted value.
        unit: what the number counts (``"pixels"``, ``"epochs"``), for the message.

    Raises:
        ValueError: naming the argument, the accepted range and the value given.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        counted = f" of {unit}" if unit else ""
        raise ValueError(f"{name} must be a whole number{counted} >= {minimum}, got {value!r}.")
    return int(value)


def check_optional_int(value: Any, name: str, minimum: int = 0, unit: str = "") -> int | None:
    """As :func:`check_int`, with ``None`` (the default) allowed."""
    return None if value is None else check_int(value, name, minimum, unit)


def check_number(value: Any, name: str, interval: str = "(-inf, inf)") -> float:
    """``value`` as a ``float`` when it is a finite real number in ``interval`` (never a bool).

    Args:
        value: what the caller passed.
        name: the argument's name.
        interval: the accepted range as written in mathematics: ``"[0, 1)"``, ``"(0, inf)"``.

    Raises:
        ValueError: naming the argument, the accepted range and the value given.
    """
    low_open, high_open = interval[0] == "(", interval[-1] == ")"
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}.")
    return float(value)


def check_fraction(value: Any, name: str) -> float:
    """A fraction strictly between 0 and 1 (``val_split`` and the like)."""
    return check_number(value, name, "(0, 1)")


def check_probability(value: Any, name: str, *, high_open: bool = False) -> float:
    """A probability in ``[0, 1]`` (``[0, 1)`` with ``high_open``: dropout)."""
    return check_number(value, name, "[0, 1)" if high_open else "[0, 1]")


def check_bool(value: Any, name: str) -> bool:
    """``value`` when it is ``True`` or ``False``.

    Raises:
        TypeError: for anything else (``1``, ``"yes"``).
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return value


def check_folder(folder: Any, what: str) -> Path:
    """``folder`` as a :class:`~pathlib.Path` to an existing folder; ``what`` names it in the error."""
    if not isinstance(folder, str | os.PathLike):
        raise TypeError(f"{what} must be a folder path, got {type(folder).__name__}.")
    path = Path(folder)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(folder)!r} does not exist.")
    if not path.is_dir():
        raise NotADirectoryError(f"{what} {str(folder)!r} is a file, not a folder.")
    return path
