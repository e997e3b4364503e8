import json

import numpy as np
import pandas as pd
import pytest

from flash.tabular.preprocessing import MISSING_CATEGORY, TabularPreprocessor, category_key


def fit(frame, categorical=("color",), numerical=("age", "fare"), scaling="quantile"):
    return TabularPreprocessor.fit(frame, list(categorical), list(numerical), scaling)


def test_layout_numbers_then_indicators_then_codes(table):
    pre = fit(table)
    x = pre.transform(table)
    # age and fare scaled, an indicator for age (it has missing values), one code for color
    assert pre.indicator_fields == ["age"]
    assert x.shape == (len(table), 4) and x.dtype == np.float32
    assert pre.num_numerical_features == 3 and pre.cardinalities == [4]  # blue, green, red, <missing>
    np.testing.assert_array_equal(x[:, 2], table["age"].isna().to_numpy(dtype=np.float32))


def test_quantile_scaling_is_robust_to_outliers_and_skew():
    values = np.r_[np.arange(1.0, 100.0), 1e9]  # one huge outlier
    frame = pd.DataFrame({"x": values})
    z = fit(frame, categorical=(), numerical=("x",)).transform(frame)[:, 0]
    assert np.all(np.diff(z) > 0), "order is kept"
    assert np.abs(z).max() < 5.3, "the outlier stays bounded"
    assert z[49] == pytest.approx(0.0, abs=0.05), "the median maps to the middle"
    assert np.std(z[:-1]) > 0.8, "the other values are not squashed together"
    robust = fit(frame, categorical=(), numerical=("x",), scaling="robust").transform(frame)[:, 0]
    assert np.std(robust[:-1]) > 0.3


def test_missing_numbers_are_imputed_with_the_training_median(table):
    pre = fit(table)
    row = pd.DataFrame([{"age": None, "fare": 10.0, "color": "red"}])
    median_row = pd.DataFrame([{"age": float(table["age"].median()), "fare": 10.0, "color": "red"}])
    assert pre.transform(row)[0, 0] == pytest.approx(pre.transform(median_row)[0, 0])
    assert pre.transform(row)[0, 2] == 1.0 and pre.transform(median_row)[0, 2] == 0.0


def test_unseen_and_missing_categories():
    frame = pd.DataFrame({"c": ["a", "b", "a", None], "n": [1.0, 2.0, 3.0, 4.0]})
    pre = fit(frame, categorical=("c",), numerical=("n",))
    assert pre.categories["c"] == sorted(["a", "b", MISSING_CATEGORY])
    new = pd.DataFrame({"c": ["zzz", "b", None, " "], "n": [1.0] * 4})
    codes = pre.transform(new)[:, -1]
    missing_code = pre.categories["c"].index(MISSING_CATEGORY) + 1
    assert codes.tolist() == [0, pre.categories["c"].index("b") + 1, missing_code, missing_code]
    assert pre.unknown_categories(new) == {"c": 1}


def test_missing_category_unseen_in_training_goes_to_unknown():
    frame = pd.DataFrame({"c": ["a", "b"] * 3, "n": range(6)})
    pre = fit(frame, categorical=("c",), numerical=("n",))
    assert pre.transform(pd.DataFrame({"c": [None], "n": [1]}))[0, -1] == 0


def test_category_keys_agree_across_types():
    assert category_key(1) == category_key(1.0) == category_key("1") == category_key(np.int64(1)) == "1"
    assert category_key(True) == "True"
    assert category_key(float("nan")) is None and category_key("  ") is None and category_key(None) is None
    assert category_key(2.5) == "2.5"


def test_state_is_plain_json_and_round_trips(table):
    pre = fit(table)
    state = pre.state_dict()
    restored = TabularPreprocessor.from_state(json.loads(json.dumps(state)))
    np.testing.assert_array_equal(restored.transform(table), pre.transform(table))


@pytest.mark.parametrize("scaling", ["quantile", "robust", "standard"])
def test_bins_are_increasing_per_numerical_feature(table, scaling):
    pre = fit(table, scaling=scaling)
    bins = pre.feature_bins(8)
    assert len(bins) == pre.num_numerical_features
    for edges in bins:
        assert len(edges) >= 2 and all(np.diff(edges) > 0)


def test_constant_column_does_not_break(table):
    frame = table.assign(const=5.0)
    pre = fit(frame, numerical=("age", "const"))
    x = pre.transform(frame)
    assert np.isfinite(x).all()
    assert len(pre.feature_bins(8)[1]) == 2


def test_unknown_scaling_names_the_choices(table):
    with pytest.raises(ValueError, match="quantile, robust, standard"):
        fit(table, scaling="minmax")


def test_a_column_both_categorical_and_numerical_is_refused(table):
    with pytest.raises(ValueError, match="both categorical and numerical"):
        fit(table, categorical=("age",), numerical=("age",))
