"""The one table reader and the missing-value and column checks every domain uses.

A table arrives as a pandas DataFrame, a file (CSV, TSV, JSON, JSON lines or Parquet, chosen by
its suffix; anything else is read as CSV), a list of row dicts or a dict of columns, and leaves
as a DataFrame. Errors name the file (or ``what`` the table is) and say what to do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
"""File suffixes the reader knows, and the format each names."""


def shown(names: Sequence[Any], limit: int = 12) -> str:
    """``names`` as a short, readable list (``a, b, c, ... (40 more)``)."""
    names = [str(n) for n in names]
    text = ", ".join(names[:limit])
    return text + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def rows_of(mask: np.ndarray, limit: int = 8) -> str:
    """The first row numbers where ``mask`` holds, for error messages."""
    rows = np.flatnonzero(mask)
    text = ", ".join(str(r) for r in rows[:limit])
    return text + (f", ... ({len(rows) - limit} more)" if len(rows) > limit else "")


# -- missing values -------------------------------------------------------------------------------
def is_missing(value: Any) -> bool:
    """``None``, NaN, ``pd.NA``/``NaT`` and blank strings count as missing."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def missing_mask(values: pd.Series | Sequence[Any]) -> np.ndarray:
    """Which entries of ``values`` are missing (blank strings included), as a bool array."""
    if not isinstance(values, pd.Series):
        return np.asarray([is_missing(v) for v in values], dtype=bool)
    mask = values.isna().to_numpy()
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        blank = values.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy(dtype=bool)
        mask = mask | blank
    return mask


# -- columns --------------------------------------------------------------------------------------
def as_field_list(fields: Any, name: str) -> list[str] | None:
    """``None``, one column name, or a list of names -> a list of names (or ``None``).

    Raises:
        TypeError: for anything but names; ValueError: for a name given twice.
    """
    if fields is None:
        return None
    if isinstance(fields, str) and fields:
        return [fields]
    if (
        isinstance(fields, Sequence)
        and not isinstance(fields, str)
        and all(isinstance(f, str) and f for f in fields)
    ):
        if len(set(fields)) != len(fields):
            raise ValueError(f"{name} names a column twice: {list(fields)}.")
        return list(fields)
    raise TypeError(f"{name} must be a column name or a list of column names, got {fields!r}.")


def require_columns(
    frame: pd.DataFrame, columns: Sequence[str], what: str, hint: str = "", *, quote: bool = True
) -> None:
    """Raise naming the columns of ``columns`` that ``frame`` lacks, the columns it has, and
    ``hint`` (what to do). ``quote`` writes the missing names as ``'name'``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        names = shown([repr(c) if quote else c for c in missing])
        raise ValueError(
            f"The {what} has no column{'s' if len(missing) > 1 else ''} {names}. "
            f"Its columns are: {shown(list(frame.columns), 50)}.{' ' + hint if hint else ''}"
        )


# -- reading --------------------------------------------------------------------------------------
def read_table(
    source: Any,
    what: str,
    encoding: str = "utf-8",
    field: str | None = None,
    text_field: str | None = None,
) -> pd.DataFrame:
    """Turn a DataFrame, a table file, a list of row dicts or a dict of columns into a DataFrame.

    Args:
        source: the table.
        what: what the table is, for messages (``"training"``, ``"predict"``).
        encoding: text encoding of CSV and JSON files.
        field: in a JSON file holding one object, the key of the list of records.
        text_field: a CSV column that stays text (``"42"`` must not become ``42.0``).

    Raises:
        FileNotFoundError: for a path that does not exist.
        ValueError: for a file that cannot be parsed, or duplicate column names.
        TypeError: for anything else.
    """
    if isinstance(source, pd.DataFrame):
        frame = source
    elif isinstance(source, str | os.PathLike):
        path = _check_file(source, what)
        kind = TABLE_SUFFIXES.get(path.suffix.lower(), "csv")
        if kind == "json":
            frame = read_json(path, what, encoding, field)
        elif kind == "parquet":
            frame = read_parquet(path, what)
        else:
            frame = read_csv(path, what, encoding, text_field)
    elif isinstance(source, Mapping):
        try:
            frame = pd.DataFrame(dict(source))
        except ValueError as error:
            raise ValueError(
                f"The {what} dict must map each column name to a list of values of equal length: {error}"
            ) from error
    elif isinstance(source, Sequence) and not isinstance(source, str | bytes):
        bad = next((i for i, row in enumerate(source) if not isinstance(row, Mapping)), None)
        if bad is not None:
            raise TypeError(
                f"The {what} rows must be dicts of column -> value; row {bad} is a {type(source[bad]).__name__}."
            )
        frame = pd.DataFrame(list(source))
    else:
        raise TypeError(
            f"The {what} data must be a pandas DataFrame, a table file (CSV, TSV, JSON, JSON lines, "
            f"Parquet), a list of dicts (one per row) or a dict of columns; got {type(source).__name__}."
        )
    if frame.columns.duplicated().any():
        dupes = frame.columns[frame.columns.duplicated()].unique().tolist()
        raise ValueError(f"The {what} data has duplicate column names: {shown(dupes)}.")
    return frame.reset_index(drop=True)


def read_csv(path: Any, what: str, encoding: str = "utf-8", text_field: str | None = None) -> pd.DataFrame:
    """A CSV file (tab-separated for ``.tsv``) as a data frame; column ``text_field`` stays text."""
    path = _check_file(path, what)
    separator = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        dtype = {text_field: str} if text_field is not None else None
        return pd.read_csv(path, sep=separator, encoding=encoding, dtype=dtype)
    except UnicodeDecodeError as error:
        raise _encoding_error(path, encoding, what, error) from error
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ValueError(f"Could not read the {what} file {path} as CSV: {error}") from error


def read_json(path: Any, what: str, encoding: str = "utf-8", field: str | None = None) -> pd.DataFrame:
    """A JSON file as a data frame: a list of records, one record per line, a dict of columns, or a
    dict holding the list of records under ``field``."""
    path = _check_file(path, what)
    content = _read_text(path, encoding, what).strip()
    if not content:
        raise ValueError(f"The {what} file {path} is empty.")
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        data = _json_lines(content, path, what)
    if isinstance(data, dict):
        if field is None:
            if all(isinstance(v, list) and not any(isinstance(x, dict) for x in v) for v in data.values()):
                return _frame(data, path, what)  # columns: {"text": [...], "label": [...]}
            raise ValueError(
                f"The {what} file {path} holds one JSON object with keys {shown(list(data), 30)}. "
                "Pass field= naming the key that holds the list of records."
            )
        if field not in data:
            raise ValueError(
                f"The {what} file {path} has no key {field!r}; its keys are {shown(list(data), 30)}."
            )
        data = data[field]
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise ValueError(f"The {what} file {path} must hold a list of records ({{column: value}} objects).")
    return _frame(data, path, what)


def read_parquet(path: Any, what: str) -> pd.DataFrame:
    """A Parquet file as a data frame (needs ``pyarrow``)."""
    path = _check_file(path, what)
    try:
        return pd.read_parquet(path)
    except ImportError as error:
        raise ImportError("Reading Parquet files needs pyarrow: pip install pyarrow.") from error
    except (OSError, ValueError) as error:
        raise ValueError(f"Could not read the {what} file {path} as Parquet: {error}") from error


def read_lines(path: Any, what: str, encoding: str = "utf-8") -> list[str]:
    """The non-blank lines of a text file, one item per line."""
    path = _check_file(path, what)
    return [line.strip() for line in _read_text(path, encoding, what).splitlines() if line.strip()]


def _check_file(path: Any, what: str) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"The {what} file must be a path, got {type(path).__name__}.")
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"The {what} file {path} does not exist.")
    return path


def _read_text(path: Path, encoding: str, what: str) -> str:
    try:
        return path.read_bytes().decode(encoding)
    except UnicodeDecodeError as error:
        raise _encoding_error(path, encoding, what, error) from error


def _encoding_error(path: Path, encoding: str, what: str, error: UnicodeDecodeError) -> ValueError:
    return ValueError(
        f"The {what} file {path} is not valid {encoding} text ({error.reason} at byte {error.start}). "
        "Pass encoding= with the file's encoding, e.g. encoding='latin-1' or encoding='cp1252' "
        "(flash finetune: --encoding latin-1)."
    )


def _json_lines(content: str, path: Path, what: str) -> list[Any]:
    rows = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(
                f"Line {number} of the {what} file {path} is not valid JSON: {error.msg}."
            ) from error
    return rows


def _frame(data: Any, path: Path, what: str) -> pd.DataFrame:
    try:
        return pd.DataFrame(data)
    except ValueError as error:
        raise ValueError(f"Could not read the {what} file {path} as a table: {error}") from error
