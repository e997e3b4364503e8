"""Checking a table's columns for tabular tasks: inferring column kinds, reading numbers, naming bad rows."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flash.core.data.tables import missing_mask, require_columns, rows_of, shown


class FieldInferenceWarning(UserWarning):
    """Says which column kinds were inferred, when ``categorical_fields``/``numerical_fields`` are not given."""


FIELDS_HINT = (
    "Check categorical_fields, numerical_fields and target_fields against those columns, or add the column."
)


def model_columns_hint(columns: Sequence[str]) -> str:
    """What to do when rows for a trained model lack one of its ``columns``."""
    return (
        f"The model was trained on the columns {shown(columns, 50)}: give every one "
        "(leave a cell empty where a value is unknown; it is imputed)."
    )


def require_fields(frame: pd.DataFrame, columns: Sequence[str], what: str, hint: str = FIELDS_HINT) -> None:
    """:func:`~flash.core.data.tables.require_columns` for the ``what`` table (``"training"``, ``"predict"``)."""
    require_columns(frame, columns, f"{what} data", hint, quote=False)


def as_floats(series: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``series`` as float64 (NaN where missing or not a number), its missing mask, and the mask of
    entries holding text that is not a number."""
    missing = missing_mask(series)
    if pd.api.types.is_bool_dtype(series.dtype):
        values = series.astype(float).to_numpy(copy=True)
    elif pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    else:
        present = series.where(~missing, np.nan)
        try:
            converted = pd.to_numeric(present, errors="coerce")
        except OverflowError:  # a whole number beyond float64 (e.g. 400 digits): infinite
            converted = pd.to_numeric(present.map(_float_or_infinity), errors="coerce")
        values = converted.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    not_numbers = np.isnan(values) & ~missing
    values[missing] = np.nan
    return values, missing, not_numbers


def _float_or_infinity(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return value


def text_examples(series: pd.Series, mask: np.ndarray) -> str:
    """Up to five distinct values of ``series`` where ``mask`` holds, for error messages."""
    return ", ".join(repr(v) for v in series[mask].unique()[:5])


def numeric_values(series: pd.Series, column: str, what: str) -> np.ndarray:
    """A numerical column as float64, with NaN where a value is missing.

    Raises:
        ValueError: for text that is not a number, or for infinite values, naming rows and values.
    """
    values, _, not_numbers = as_floats(series)
    if not_numbers.any():
        raise ValueError(
            f"Numerical column {column!r} of the {what} data holds text that is not a number "
            f"({text_examples(series, not_numbers)}) in rows {rows_of(not_numbers)}. Clean those values, "
            f"leave them empty (missing numbers are imputed), or list {column!r} in categorical_fields."
        )
    infinite = np.isinf(values)
    if infinite.any():
        raise ValueError(
            f"Numerical column {column!r} of the {what} data has infinite values in rows {rows_of(infinite)} "
            "(or numbers too large for a 64-bit float). "
            "Replace them with finite numbers, or leave them empty (missing numbers are imputed)."
        )
    return values


@dataclass
class InferredFields:
    """Column kinds read off a training table, and the columns left out with the reason."""

    categorical: list[str] = field(default_factory=list)
    numerical: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)

    def message(self) -> str:
        text = (
            f"Inferred the column kinds from the training data: categorical: "
            f"{shown(self.categorical, 50) or 'none'}; numerical: {shown(self.numerical, 50) or 'none'}"
        )
        if self.ignored:
            text += "; ignored: " + "; ".join(f"{name} ({why})" for name, why in self.ignored.items())
        return text + ". Pass categorical_fields= and numerical_fields= to choose them."


def infer_fields(frame: pd.DataFrame, exclude: Sequence[str]) -> InferredFields:
    """Sort the columns of ``frame`` (except ``exclude``) into categorical and numerical ones.

    Numbers are numerical, text and booleans categorical. Left out: columns with no values,
    text with a distinct value in most rows (names, free text, identifiers), and a column of
    unique consecutive whole numbers (a row id).
    """
    inferred = InferredFields()
    for column in frame.columns:
        if column in exclude:
            continue
        name = str(column)
        series = frame[column]
        present = series[~missing_mask(series)]
        if present.empty:
            inferred.ignored[name] = "no values"
            continue
        distinct = present.nunique()
        if pd.api.types.is_bool_dtype(series.dtype) or (
            series.dtype == object and present.map(lambda v: isinstance(v, bool)).all()
        ):
            inferred.categorical.append(name)
        elif pd.api.types.is_numeric_dtype(series.dtype):
            if _looks_like_row_id(present, len(series)):
                inferred.ignored[name] = "a row id: unique consecutive whole numbers"
            else:
                inferred.numerical.append(name)
        elif pd.to_numeric(present, errors="coerce").notna().all():
            inferred.numerical.append(name)
        elif distinct > 20 and distinct > 0.5 * len(present):
            inferred.ignored[name] = (
                f"free text or an identifier: {distinct} distinct values in {len(present)} rows"
            )
        else:
            inferred.categorical.append(name)
    return inferred


def _looks_like_row_id(values: pd.Series, rows: int) -> bool:
    if len(values) != rows or rows < 20:
        return False
    numbers = values.to_numpy(dtype=np.float64)
    if not np.all(np.mod(numbers, 1) == 0):
        return False
    ordered = np.sort(numbers)
    return bool(np.all(np.diff(ordered) == 1))


def announce(inferred: InferredFields) -> None:
    """Tell the user which kinds were inferred."""
    warnings.warn(inferred.message(), FieldInferenceWarning, stacklevel=5)  # from_* -> the caller
