"""The texts of a table's column, with errors that say which rows have none.

Tables themselves are read by :mod:`flash.core.data.tables`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flash.core.data.tables import missing_mask, require_columns, rows_of


def texts_of(
    frame: pd.DataFrame, input_field: str, what: str, drop_empty: bool = False
) -> tuple[list[str], np.ndarray]:
    """The texts of column ``input_field`` and the positions of the rows kept.

    Raises:
        ValueError: for a row without text (unless ``drop_empty``), naming the row.
    """
    require_columns(frame, [input_field], what)
    column = frame[input_field].tolist()
    empty = missing_mask(column)
    if empty.any() and not drop_empty:
        rows = np.flatnonzero(empty)
        raise ValueError(
            f"The {what} has no text in column {input_field!r} in row{'s' if len(rows) > 1 else ''} "
            f"{rows_of(empty, 10)} (counting data rows from 0). Fill them in, or pass drop_empty=True "
            "(flash finetune: --drop-empty) to drop such rows."
        )
    kept = np.flatnonzero(~empty)
    return [str(column[i]) for i in kept], kept
