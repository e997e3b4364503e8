"""Reading texts and labels from CSV, JSON and Parquet files and data frames, with errors that say where."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _shown(names: Sequence[Any], limit: int = 30) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


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


def read_csv(path: Any, what: str, encoding: str = "utf-8", text_field: str | None = None) -> pd.DataFrame:
    """A CSV file (tab-separated for ``.tsv``) as a data frame; column ``text_field`` stays text."""
    path = _check_file(path, what)
    separator = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        # the text column stays text: "42" must not become 42.0
        dtype = {text_field: str} if text_field is not None else None
        return pd.read_csv(path, sep=separator, encoding=encoding, dtype=dtype)
    except UnicodeDecodeError as error:
        raise _encoding_error(path, encoding, what, error) from error
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ValueError(f"Could not read the {what} file {path} as CSV: {error}") from error


def read_json(path: Any, what: str, encoding: str = "utf-8", field: str | None = None) -> pd.DataFrame:
    """A JSON file as a data frame: a list of records, one record per line, or a dict holding the list under ``field``."""
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
                f"The {what} file {path} holds one JSON object with keys {_shown(list(data))}. "
                "Pass field= naming the key that holds the list of records."
            )
        if field not in data:
            raise ValueError(
                f"The {what} file {path} has no key {field!r}; its keys are {_shown(list(data))}."
            )
        data = data[field]
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise ValueError(f"The {what} file {path} must hold a list of records ({{column: value}} objects).")
    return _frame(data, path, what)


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


def read_parquet(path: Any, what: str) -> pd.DataFrame:
    """A Parquet file as a data frame (needs ``pyarrow``)."""
    path = _check_file(path, what)
    try:
        return pd.read_parquet(path)
    except ImportError as error:
        raise ImportError("Reading Parquet files needs pyarrow: pip install pyarrow.") from error
    except (OSError, ValueError) as error:
        raise ValueError(f"Could not read the {what} file {path} as Parquet: {error}") from error


def read_table(
    path: Any, what: str, encoding: str = "utf-8", field: str | None = None, text_field: str | None = None
) -> pd.DataFrame:
    """Read a CSV, TSV, JSON, JSON-lines or Parquet file, chosen by its suffix."""
    suffix = Path(path).suffix.lower() if isinstance(path, str | os.PathLike) else ""
    kind = TABLE_SUFFIXES.get(suffix)
    if kind == "csv":
        return read_csv(path, what, encoding, text_field)
    if kind == "json":
        return read_json(path, what, encoding, field)
    if kind == "parquet":
        return read_parquet(path, what)
    raise ValueError(f"The {what} file {path}: use a {', '.join(TABLE_SUFFIXES)} file.")


def read_lines(path: Any, what: str, encoding: str = "utf-8") -> list[str]:
    """The non-blank lines of a text file, one text per line."""
    path = _check_file(path, what)
    return [line.strip() for line in _read_text(path, encoding, what).splitlines() if line.strip()]


def require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise naming the columns ``frame`` lacks and the columns it has."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"The {what} has no column{'s' if len(missing) > 1 else ''} {_shown([repr(c) for c in missing])}. "
            f"Its columns are: {_shown(list(frame.columns))}."
        )


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def texts_of(
    frame: pd.DataFrame, input_field: str, what: str, drop_empty: bool = False
) -> tuple[list[str], np.ndarray]:
    """The texts of column ``input_field`` and the positions of the rows kept.

    Raises:
        ValueError: for a row without text (unless ``drop_empty``), naming the row.
    """
    require_columns(frame, [input_field], what)
    column = frame[input_field].tolist()
    empty = np.asarray([_blank(v) for v in column], dtype=bool)
    if empty.any() and not drop_empty:
        rows = np.flatnonzero(empty)
        shown = ", ".join(map(str, rows[:10])) + (f", ... ({len(rows) - 10} more)" if len(rows) > 10 else "")
        raise ValueError(
            f"The {what} has no text in column {input_field!r} in row{'s' if len(rows) > 1 else ''} "
            f"{shown} (counting data rows from 0). Fill them in, or pass drop_empty=True "
            "(flash finetune: --drop-empty) to drop such rows."
        )
    kept = np.flatnonzero(~empty)
    return [str(column[i]) for i in kept], kept


def as_fields(fields: Any, name: str) -> list[str] | None:
    """``None``, a column name, or a list of column names -> a list (or ``None``)."""
    if fields is None:
        return None
    if isinstance(fields, str) and fields:
        return [fields]
    if isinstance(fields, Sequence) and fields and all(isinstance(f, str) and f for f in fields):
        if len(set(fields)) != len(fields):
            raise ValueError(f"{name} names a column twice: {list(fields)}.")
        return list(fields)
    raise TypeError(f"{name} must be a column name or a non-empty list of column names, got {fields!r}.")
