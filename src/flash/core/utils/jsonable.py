"""Turn Python, NumPy and torch values into what JSON holds (for serving, export metadata, CLI output)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def to_json(value: Any) -> Any:
    """``value`` with tuples, NumPy and torch values converted, and what JSON cannot hold dropped
    (objects) or set to ``None`` (NaN and infinities)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return to_json(value.item())
    if isinstance(value, torch.Tensor | np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, Mapping):
        converted = {str(k): (v, to_json(v)) for k, v in value.items()}
        return {k: new for k, (old, new) in converted.items() if new is not None or old is None}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return None
