"""Rows of results written as an aligned text table, JSON or CSV (for the ``flash`` command)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

FORMATS = ("table", "json", "csv")


def format_rows(rows: Sequence[Mapping[str, Any]], fmt: str, columns: Sequence[str] | None = None) -> str:
    """``rows`` (dicts sharing keys) as ``"table"``, ``"json"`` or ``"csv"`` text."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}. Choose one of {', '.join(FORMATS)}.")
    columns = list(columns) if columns is not None else _columns(rows)
    if fmt == "json":
        return json.dumps(
            [{c: row.get(c) for c in columns if c in row} for row in rows], indent=2, default=str
        )
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c), csv_cell=True) for c in columns])
        return buffer.getvalue().rstrip("\n")
    return table(rows, columns)


def table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, max_width: int = 72
) -> str:
    """An aligned plain-text table; numbers right-aligned, long cells shortened."""
    columns = list(columns) if columns is not None else _columns(rows)
    cells = [[_shorten(_cell(row.get(c)), max_width) for c in columns] for row in rows]
    numeric = [all(_is_number(row.get(c)) for row in rows if row.get(c) is not None) for c in columns]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out.extend(line(values) for values in cells)
    return "\n".join(out)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    return columns


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: Any, csv_cell: bool = False) -> str:
    if value is None:
        return "" if csv_cell else "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "" if csv_cell else "nan"
        return repr(value) if csv_cell else f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ";".join(_cell(v, csv_cell) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def _shorten(text: str, width: int) -> str:
    """Cut the middle of a long cell, so a path keeps its file name and a text its end."""
    text = text.replace("\n", " ")
    if len(text) <= width:
        return text
    head = (width - 1) // 3
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]
