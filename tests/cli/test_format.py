"""Results as an aligned table, JSON or CSV."""

from __future__ import annotations

import csv
import json

import pytest

from flash.cli.format import format_rows, table

ROWS = [
    {"input": "images/ants/1.jpg", "prediction": "ants", "ants": 0.91234, "bees": 0.08766},
    {"input": "images/bees/2.jpg", "prediction": "bees", "ants": 0.1, "bees": 0.9},
]


def test_table_aligns_text_left_and_numbers_right():
    lines = table(ROWS).splitlines()
    assert lines[0].split() == ["input", "prediction", "ants", "bees"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].startswith("images/ants/1.jpg  ants")
    assert lines[2].endswith("0.9123  0.08766")
    assert lines[3].endswith("   0.1      0.9")  # right-aligned under their headers


def test_long_cells_keep_their_end():
    path = "a/very/long/folder/name/that/goes/on/and/on/and/on/and/on/image_0042.jpg"
    cell = table([{"input": path}], max_width=40).splitlines()[2]
    assert len(cell) == 40 and cell.endswith("image_0042.jpg") and "…" in cell


def test_json_and_csv_round_trip():
    assert json.loads(format_rows(ROWS, "json")) == ROWS
    parsed = list(csv.DictReader(format_rows(ROWS, "csv").splitlines()))
    assert [float(row["ants"]) for row in parsed] == [0.91234, 0.1]  # full precision in CSV
    multi = format_rows([{"input": "x", "prediction": ["a", "b"]}], "csv")
    assert multi.splitlines()[1] == "x,a;b"


def test_unknown_format_names_the_choices():
    with pytest.raises(ValueError, match="table, json, csv"):
        format_rows(ROWS, "xml")
