"""Tiny generated tables shared by the tabular tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

SMALL_TABM = {"k": 4, "d_block": 16, "n_blocks": 2}


def make_table(n: int = 80, seed: int = 0) -> pd.DataFrame:
    """A table whose label depends on a number and a category, with missing values in both."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, n).round(1)
    fare = rng.lognormal(3, 1, n).round(2)
    color = rng.choice(["red", "green", "blue"], n)
    score = (age - 40) / 12 + np.where(color == "red", 1.5, -0.5) + rng.normal(0, 0.3, n)
    frame = pd.DataFrame(
        {
            "age": age,
            "fare": fare,
            "color": color,
            "label": np.where(score > 0, "yes", "no"),
            "amount": 3.0 * age + np.where(color == "red", 20.0, 0.0) + rng.normal(0, 1, n),
        }
    )
    frame.loc[[3, 11], "age"] = np.nan
    frame.loc[[5], "color"] = None
    return frame
