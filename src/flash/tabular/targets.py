"""Checks of the target columns: present in every row, and numbers for regression.

Targets are never imputed, so the advice differs from that for input columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from flash.core.data.tables import missing_mask, rows_of
from flash.tabular.frames import as_floats, require_fields, text_examples


def check_target_present(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise for a target column ``frame`` lacks, or one with missing values (naming the rows).

    Raises:
        ValueError: saying what is wrong and what to do.
    """
    require_fields(frame, columns, what, hint="Check target_fields: it names the column to predict.")
    if frame.empty:
        raise ValueError(f"The {what} data has no rows. Give a table with at least one row.")
    for name in columns:
        missing = missing_mask(frame[name])
        if missing.all():
            raise ValueError(
                f"Target column {name!r} of the {what} data has no values (every entry is missing). "
                "Check that target_fields names the column to predict, and fill it."
            )
        if missing.any():
            raise ValueError(
                f"Target column {name!r} of the {what} data is missing in {int(missing.sum())} rows "
                f"({rows_of(missing)}). Drop those rows (e.g. frame.dropna(subset=[{name!r}])) or fill them."
            )


def target_numbers(series: pd.Series, column: str, what: str) -> np.ndarray:
    """A regression target column as float64.

    Raises:
        ValueError: for text that is not a number or infinite values, naming column and rows.
    """
    values, _, not_numbers = as_floats(series)
    if not_numbers.any():
        raise ValueError(
            f"Regression target {column!r} of the {what} data holds text that is not a number "
            f"({text_examples(series, not_numbers)}) in rows {rows_of(not_numbers)}. A regression target "
            "must be numbers: clean those values or drop the rows; to predict classes, use "
            "TabularClassificationData and TabularClassifier."
        )
    infinite = np.isinf(values)
    if infinite.any():
        raise ValueError(
            f"Regression target {column!r} of the {what} data has infinite values in rows "
            f"{rows_of(infinite)}. Replace them with finite numbers or drop those rows."
        )
    return values
