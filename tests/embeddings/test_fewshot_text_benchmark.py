"""The parts of benchmarks/fewshot_text.py that decide which sentences every contender sees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tests.scripts import loaded_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fewshot_text.py"


@pytest.fixture(scope="module")
def bench():
    yield from loaded_script("fewshot_text")


def _train() -> pd.DataFrame:
    return pd.DataFrame(
        {"sentence": [f"s{i}" for i in range(30)], "label": ["negative"] * 10 + ["positive"] * 20}
    )


def test_a_draw_is_k_per_class_the_same_for_a_seed_and_different_across_seeds(bench):
    first, again, other = bench.draw(_train(), 4, 0), bench.draw(_train(), 4, 0), bench.draw(_train(), 4, 1)
    assert first["label"].value_counts().to_dict() == {"negative": 4, "positive": 4}
    assert first.equals(again)
    assert not first.equals(other)
    assert first["sentence"].is_unique


def test_k_larger_than_a_class_is_refused(bench):
    with pytest.raises(ValueError, match="'negative' has 10 training rows, fewer than --shots 11"):
        bench.draw(_train(), 11, 0)


def test_the_summary_gives_mean_sd_and_every_seed(bench):
    row = bench.summarise("x", 8, [{"accuracy": 0.7, "seconds": 2.0}, {"accuracy": 0.8, "seconds": 4.0}])
    assert row["accuracy mean"] == pytest.approx(0.75)
    assert row["sd"] == pytest.approx(0.0707, abs=1e-4)
    assert row["per seed"] == "0.700 0.800" and row["wall s / run"] == 3.0


def test_a_folder_without_the_csv_files_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and "has no train.csv" in result.stderr
