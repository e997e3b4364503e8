"""Preprocessing fitted on the training rows only, kept as plain values so it travels in checkpoints.

A row becomes one float vector: the scaled numerical columns, then a 0/1 missing-indicator for
every numerical column that had missing values in training, then one integer code per
categorical column (``0`` is the "unknown" slot: a category never seen in training; ``1..n`` the
training categories, a missing value being a category of its own when training had one).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtri

from flash.core.data.tables import shown
from flash.tabular.frames import model_columns_hint, numeric_values, require_fields

SCALINGS = ("quantile", "robust", "standard")
"""Numerical scalings: ``quantile`` maps each column through its training quantiles onto a normal
distribution (outliers and skew cannot dominate); ``robust`` centres on the median and divides by
the interquartile range; ``standard`` uses mean and standard deviation."""

MISSING_CATEGORY = "<missing>"
MAX_QUANTILES = 512
_NORMAL_LIMIT = float(ndtri(1e-7))  # the normal scores of the extreme quantiles, +-5.2


def category_key(value: Any) -> str | None:
    """The key a categorical value is stored under: ``1``, ``1.0``, ``"1"`` and ``np.int64(1)`` agree."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if pd.isna(value):
        return None
    return str(value)


class NumericalColumn:
    """Imputation, missing indicator and scaling of one numerical column."""

    def __init__(
        self,
        fill: float,
        indicator: bool,
        scaling: str,
        quantiles: Sequence[float],
        center: float = 0.0,
        scale: float = 1.0,
    ) -> None:
        self.fill = float(fill)
        self.indicator = bool(indicator)
        self.scaling = scaling
        self.quantiles = np.asarray(quantiles, dtype=np.float64)
        self.center = float(center)
        self.scale = float(scale)

    @classmethod
    def fit(cls, values: np.ndarray, scaling: str) -> NumericalColumn:
        present = values[~np.isnan(values)]
        fill = float(np.median(present))
        indicator = bool(np.isnan(values).any())
        quantiles = np.quantile(present, np.linspace(0.0, 1.0, max(2, min(MAX_QUANTILES, len(present)))))
        if scaling == "robust":
            q1, q3 = np.quantile(present, [0.25, 0.75])
            center, scale = fill, (q3 - q1) or float(np.std(present)) or 1.0
        else:
            center, scale = float(np.mean(present)), float(np.std(present)) or 1.0
        return cls(fill, indicator, scaling, quantiles=quantiles, center=center, scale=scale)

    def transform(self, values: np.ndarray) -> np.ndarray:
        filled = np.where(np.isnan(values), self.fill, values)
        if self.scaling != "quantile":
            return (filled - self.center) / self.scale
        q = self.quantiles
        if q[-1] == q[0]:
            return np.zeros_like(filled)
        levels = np.linspace(0.0, 1.0, len(q))
        # The mean of interpolating from both ends gives tied quantiles their middle level.
        upward = np.interp(filled, q, levels)
        downward = -np.interp(-filled, -q[::-1], -levels[::-1])
        uniform = np.clip(0.5 * (upward + downward), 1e-7, 1 - 1e-7)
        return np.clip(ndtri(uniform), _NORMAL_LIMIT, -_NORMAL_LIMIT)

    def state(self) -> dict[str, Any]:
        return {
            "fill": self.fill,
            "indicator": self.indicator,
            "scaling": self.scaling,
            "quantiles": [float(v) for v in self.quantiles],
            "center": self.center,
            "scale": self.scale,
        }

    def bins(self, n_bins: int) -> list[float]:
        """Edges of ``n_bins`` equal-frequency bins of the training values, after scaling."""
        levels = np.linspace(0.0, 1.0, len(self.quantiles))
        edges = np.unique(
            self.transform(np.interp(np.linspace(0.0, 1.0, n_bins + 1), levels, self.quantiles))
        )
        if len(edges) < 2:
            edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
        return [float(e) for e in edges]


class TabularPreprocessor:
    """Turns table rows into the model's input vectors; fitted on training rows only.

    Args:
        categorical_fields: categorical column names, in order.
        numerical_fields: numerical column names, in order.
        numerical: per numerical column, its fitted :class:`NumericalColumn` state.
        categories: per categorical column, its training categories (as keys).
    """

    def __init__(
        self,
        categorical_fields: Sequence[str],
        numerical_fields: Sequence[str],
        numerical: dict[str, dict[str, Any]],
        categories: dict[str, list[str]],
    ) -> None:
        self.categorical_fields = list(categorical_fields)
        self.numerical_fields = list(numerical_fields)
        self.numerical = {name: NumericalColumn(**numerical[name]) for name in self.numerical_fields}
        self.categories = {name: list(categories[name]) for name in self.categorical_fields}
        self._codes = {
            name: {key: i + 1 for i, key in enumerate(keys)} for name, keys in self.categories.items()
        }

    # -- fitting -------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        categorical_fields: Sequence[str],
        numerical_fields: Sequence[str],
        numerical_scaling: str = "quantile",
    ) -> TabularPreprocessor:
        """Learn imputation, scaling and categories from the training ``frame``.

        Raises:
            ValueError: for a column the frame lacks, a column with no values, text in a numerical
                column, or infinite values.
        """
        if numerical_scaling not in SCALINGS:
            raise ValueError(
                f"Unknown numerical_scaling {numerical_scaling!r}. Choose one of {', '.join(SCALINGS)}."
            )
        overlap = set(categorical_fields) & set(numerical_fields)
        if overlap:
            raise ValueError(
                f"Columns {shown(sorted(overlap))} are listed as both categorical and numerical."
            )
        if not categorical_fields and not numerical_fields:
            raise ValueError("No input columns: give categorical_fields and/or numerical_fields.")
        require_fields(frame, [*categorical_fields, *numerical_fields], "training")
        numerical: dict[str, dict[str, Any]] = {}
        for name in numerical_fields:
            values = numeric_values(frame[name], name, "training")
            if np.isnan(values).all():
                raise ValueError(_empty_column(name))
            numerical[name] = NumericalColumn.fit(values, numerical_scaling).state()
        categories: dict[str, list[str]] = {}
        for name in categorical_fields:
            keys = [category_key(v) for v in frame[name].tolist()]
            if all(k is None for k in keys):
                raise ValueError(_empty_column(name))
            counts = Counter(MISSING_CATEGORY if k is None else k for k in keys)
            categories[name] = sorted(counts)
        return cls(categorical_fields, numerical_fields, numerical, categories)

    # -- what the model needs --------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        """The input columns every row must have."""
        return [*self.numerical_fields, *self.categorical_fields]

    @property
    def indicator_fields(self) -> list[str]:
        """Numerical columns that get a missing-indicator feature."""
        return [name for name in self.numerical_fields if self.numerical[name].indicator]

    @property
    def num_numerical_features(self) -> int:
        """Width of the numerical part of a row vector: scaled values and missing indicators."""
        return len(self.numerical_fields) + len(self.indicator_fields)

    @property
    def cardinalities(self) -> list[int]:
        """Training categories per categorical column (code ``0``, "unknown", not counted)."""
        return [len(self.categories[name]) for name in self.categorical_fields]

    @property
    def num_features(self) -> int:
        """Width of a row vector."""
        return self.num_numerical_features + len(self.categorical_fields)

    # -- transforming ----------------------------------------------------------------------------
    def check_columns(self, frame: pd.DataFrame, what: str, ignore: Sequence[str] = ()) -> None:
        """Raise for missing input columns; warn about extra ones (they are ignored)."""
        require_fields(frame, self.columns, what, model_columns_hint(self.columns))
        extra = [str(c) for c in frame.columns if c not in self.columns and c not in ignore]
        if extra:
            warnings.warn(
                f"The {what} data has columns the model does not use; ignoring {shown(extra)}.",
                UserWarning,
                stacklevel=4,
            )

    def transform(self, frame: pd.DataFrame, what: str = "predict") -> np.ndarray:
        """Row vectors (``float32``, one row per table row) for ``frame``.

        Raises:
            ValueError: for a missing column, text in a numerical column or infinite values.
        """
        require_fields(frame, self.columns, what, model_columns_hint(self.columns))
        numeric: list[np.ndarray] = []
        indicators: list[np.ndarray] = []
        for name in self.numerical_fields:
            values = numeric_values(frame[name], name, what)
            column = self.numerical[name]
            numeric.append(column.transform(values))
            if column.indicator:
                indicators.append(np.isnan(values).astype(np.float64))
        codes = [self._encode(name, frame[name]) for name in self.categorical_fields]
        columns = [*numeric, *indicators, *codes]
        if not columns:
            return np.zeros((len(frame), 0), dtype=np.float32)
        return np.stack(columns, axis=1).astype(np.float32)

    def _encode(self, name: str, series: pd.Series) -> np.ndarray:
        codes = self._codes[name]
        missing_code = codes.get(MISSING_CATEGORY, 0)
        keys = (category_key(v) for v in series.tolist())
        return np.asarray([missing_code if k is None else codes.get(k, 0) for k in keys], dtype=np.float64)

    def unknown_categories(self, frame: pd.DataFrame) -> dict[str, int]:
        """How many values per categorical column were never seen in training (mapped to "unknown")."""
        counts = {name: int((self._encode(name, frame[name]) == 0).sum()) for name in self.categorical_fields}
        return {name: count for name, count in counts.items() if count}

    def feature_bins(self, n_bins: int = 48) -> list[list[float]]:
        """Bin edges per numerical feature (scaled columns, then missing indicators), for embeddings."""
        edges = [self.numerical[name].bins(n_bins) for name in self.numerical_fields]
        return edges + [[0.0, 1.0] for _ in self.indicator_fields]

    def typical_row(self) -> dict[str, Any]:
        """A row of typical values: numerical medians and each column's first training category."""
        row: dict[str, Any] = {name: self.numerical[name].fill for name in self.numerical_fields}
        for name in self.categorical_fields:
            known = [k for k in self.categories[name] if k != MISSING_CATEGORY]
            row[name] = known[0] if known else None
        return row

    # -- plain-value state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The fitted preprocessing as plain lists, dicts, strings and floats."""
        return {
            "categorical_fields": list(self.categorical_fields),
            "numerical_fields": list(self.numerical_fields),
            "numerical": {name: self.numerical[name].state() for name in self.numerical_fields},
            "categories": {name: list(self.categories[name]) for name in self.categorical_fields},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TabularPreprocessor:
        """Rebuild from :meth:`state_dict`."""
        try:
            return cls(
                state["categorical_fields"],
                state["numerical_fields"],
                state["numerical"],
                state["categories"],
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"Not a tabular preprocessing state (missing {error}).") from error

    def __repr__(self) -> str:
        return (
            f"TabularPreprocessor(numerical={self.numerical_fields}, categorical={self.categorical_fields}, "
            f"scaling={self.numerical[self.numerical_fields[0]].scaling if self.numerical_fields else None})"
        )


def _empty_column(name: str) -> str:
    return (
        f"Column {name!r} has no values in the training data (every entry is missing). "
        "Drop it from the fields, or fill it."
    )
