"""Fixtures for the tabular tests."""

from __future__ import annotations

import pandas as pd
import pytest
from tabular_tables import make_table


@pytest.fixture
def table() -> pd.DataFrame:
    return make_table()
