import numpy as np
import pandas as pd
import pytest

from flash.tabular import FieldInferenceWarning, TabularClassificationData, TabularRegressionData

FIELDS = {"categorical_fields": ["color"], "numerical_fields": ["age", "fare"], "target_fields": "label"}


def test_csv_frame_and_dicts_give_the_same_data(table, tmp_path):
    table.to_csv(tmp_path / "train.csv", index=False)
    from_csv = TabularClassificationData.from_csv(**FIELDS, train_file=str(tmp_path / "train.csv"))
    from_frame = TabularClassificationData.from_data_frame(**FIELDS, train_data_frame=table)
    from_rows = TabularClassificationData.from_dicts(**FIELDS, train_dict=table.to_dict("records"))
    from_columns = TabularClassificationData.from_dicts(**FIELDS, train_dict=table.to_dict("list"))
    expected = from_frame.dataset("train").features
    for data in (from_csv, from_rows, from_columns):
        assert data.labels == ["no", "yes"] and data.num_classes == 2
        np.testing.assert_allclose(data.dataset("train").features, expected, rtol=1e-6)


def test_from_csv_takes_a_file_per_split(table, tmp_path):
    paths = {}
    parts = {
        "train": table.iloc[:50],
        "val": table.iloc[50:60],
        "test": table.iloc[60:70],
        "predict": table.iloc[70:].drop(columns=["label"]),
    }
    for stage, part in parts.items():
        paths[f"{stage}_file"] = str(tmp_path / f"{stage}.csv")
        part.to_csv(paths[f"{stage}_file"], index=False)
    data = TabularClassificationData.from_csv(**FIELDS, **paths, batch_size=8)
    assert {stage: len(split) for stage, split in data.splits.items() if split is not None} == {
        "train": 50,
        "val": 10,
        "test": 10,
        "predict": 10,
    }
    assert data.batch_size == 8
    alone = TabularClassificationData.from_csv(**FIELDS, train_file=paths["train_file"])
    assert data.preprocessing_state() == alone.preprocessing_state()


def test_preprocessing_is_fitted_on_training_rows_only(table):
    train, val = table.iloc[:60], table.iloc[60:].copy()
    val["age"] = 1000.0  # would move any statistic fitted on it
    data = TabularClassificationData.from_data_frame(**FIELDS, train_data_frame=train, val_data_frame=val)
    alone = TabularClassificationData.from_data_frame(**FIELDS, train_data_frame=train)
    assert data.preprocessing_state() == alone.preprocessing_state()


def test_val_split_holds_out_rows_stratified_before_fitting(table):
    data = TabularClassificationData.from_data_frame(**FIELDS, train_data_frame=table, val_split=0.25, seed=1)
    train, val = data.splits["train"], data.splits["val"]
    assert len(train) + len(val) == len(table) and len(val) == pytest.approx(20, abs=1)
    assert set(np.unique(val.targets)) == {0, 1}
    fitted_on = TabularClassificationData.from_data_frame(**FIELDS, train_data_frame=data.frames["train"])
    assert data.preprocessing_state() == fitted_on.preprocessing_state()


def test_batches_are_dicts_of_float_rows_and_class_indices(table):
    data = TabularClassificationData.from_data_frame(**FIELDS, train_data_frame=table, batch_size=16)
    batch = next(iter(data.train_dataloader()))
    assert batch["input"].shape == (16, 4) and batch["input"].dtype.is_floating_point
    assert batch["target"].dtype == np.int64 or str(batch["target"].dtype) == "torch.int64"


def test_field_kinds_are_inferred_and_announced(table):
    frame = table.assign(
        row_id=range(len(table)), name=[f"person {i}" for i in range(len(table))], empty=None
    )
    with pytest.warns(FieldInferenceWarning) as record:
        data = TabularClassificationData.from_data_frame(
            target_fields="label", train_data_frame=frame.drop(columns="amount")
        )
    message = str(record[0].message)
    assert data.categorical_fields == ["color"] and data.numerical_fields == ["age", "fare"]
    for said in (
        "categorical: color",
        "numerical: age, fare",
        "row_id (a row id",
        "name (free text",
        "empty (no values",
    ):
        assert said in message


def test_one_kind_given_means_the_other_is_empty(table):
    data = TabularClassificationData.from_data_frame(
        numerical_fields=["age"], target_fields="label", train_data_frame=table
    )
    assert data.categorical_fields == [] and data.numerical_fields == ["age"]


def test_regression_data_keeps_raw_targets_and_their_statistics(table):
    data = TabularRegressionData.from_data_frame(
        categorical_fields=["color"],
        numerical_fields=["age"],
        target_fields=["amount", "fare"],
        train_data_frame=table,
    )
    assert data.num_targets == 2 and data.labels is None
    np.testing.assert_allclose(data.target_mean, table[["amount", "fare"]].mean().to_numpy(), rtol=1e-5)
    assert data.dataset("train").targets.shape == (len(table), 2)


# -- bad input -----------------------------------------------------------------------------------
def test_target_with_missing_values_names_the_rows(table):
    table.loc[[2, 7], "label"] = None
    with pytest.raises(
        ValueError, match=r"Target column 'label' of the training data is missing in 2 rows \(2, 7\)"
    ):
        TabularClassificationData.from_data_frame(**FIELDS, train_data_frame=table)


def test_target_without_any_value_or_a_table_without_rows(table):
    with pytest.raises(
        ValueError, match=r"'label' of the training data has no values.*Check that target_fields"
    ):
        TabularClassificationData.from_data_frame(**FIELDS, train_data_frame=table.assign(label=None))
    with pytest.raises(ValueError, match="The training data has no rows. Give a table with at least one row"):
        TabularClassificationData.from_data_frame(**FIELDS, train_data_frame=table.iloc[:0])


def test_missing_target_in_validation_data(table):
    val = table.iloc[:10].copy()
    val.loc[4, "label"] = np.nan
    with pytest.raises(ValueError, match="'label' of the val data is missing in 1 rows"):
        TabularClassificationData.from_data_frame(**FIELDS, train_data_frame=table, val_data_frame=val)


def test_a_column_the_data_lacks_lists_its_columns(table):
    with pytest.raises(
        ValueError,
        match=r"no column wind\. Its columns are: age, fare, color, label, amount\. Check categorical_fields",
    ):
        TabularClassificationData.from_data_frame(
            categorical_fields=["color"],
            numerical_fields=["age", "wind"],
            target_fields="label",
            train_data_frame=table,
        )
    with pytest.raises(ValueError, match="no column survived.*Check target_fields"):
        TabularClassificationData.from_data_frame(
            **{**FIELDS, "target_fields": "survived"}, train_data_frame=table
        )


def test_a_column_the_predict_data_lacks(table):
    with pytest.raises(ValueError, match="predict data has no column fare"):
        TabularClassificationData.from_data_frame(
            **FIELDS, train_data_frame=table, predict_data_frame=table.drop(columns=["fare"])
        )


@pytest.mark.parametrize("column", ["age", "color"])
def test_an_entirely_empty_column_is_refused(table, column):
    table[column] = None
    with pytest.raises(ValueError, match=f"Column '{column}' has no values in the training data"):
        TabularClassificationData.from_data_frame(**FIELDS, train_data_frame=table)


def test_text_in_a_numerical_column_names_rows_and_values(table, tmp_path):
    table["fare"] = table["fare"].astype(object)
    table.loc[[4, 9], "fare"] = "free"
    table.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(ValueError, match=r"'fare'.*text that is not a number \('free'\) in rows 4, 9"):
        TabularClassificationData.from_csv(**FIELDS, train_file=str(tmp_path / "train.csv"))


def test_text_in_a_numerical_column_of_the_test_data_fails_before_training(table):
    test = table.iloc[:5].copy()
    test["age"] = test["age"].astype(object)
    test.loc[1, "age"] = "old"
    with pytest.raises(ValueError, match="'age' of the test data holds text"):
        TabularClassificationData.from_data_frame(**FIELDS, train_data_frame=table, test_data_frame=test)


def test_infinite_values_are_refused(table):
    table.loc[6, "fare"] = np.inf
    with pytest.raises(ValueError, match=r"'fare' of the training data has infinite values in rows 6"):
        TabularClassificationData.from_data_frame(**FIELDS, train_data_frame=table)


def test_regression_target_must_be_finite_numbers(table):
    with pytest.raises(
        ValueError,
        match=r"Regression target 'label'.*text that is not a number.*use TabularClassificationData",
    ):
        TabularRegressionData.from_data_frame(
            numerical_fields=["age"], target_fields="label", train_data_frame=table
        )
    table.loc[[1, 4], "amount"] = [np.inf, -np.inf]
    with pytest.raises(
        ValueError, match=r"Regression target 'amount' of the training data has infinite values in rows 1, 4"
    ):
        TabularRegressionData.from_data_frame(
            numerical_fields=["age"], target_fields="amount", train_data_frame=table
        )


def test_other_bad_arguments(table):
    with pytest.raises(ValueError, match="target_fields is required"):
        TabularClassificationData.from_data_frame(numerical_fields=["age"], train_data_frame=table)
    with pytest.raises(ValueError, match="needs a training table"):
        TabularClassificationData.from_data_frame(**FIELDS, val_data_frame=table)
    with pytest.raises(ValueError, match="one target column"):
        TabularClassificationData.from_data_frame(
            **{**FIELDS, "target_fields": ["label", "amount"]}, train_data_frame=table
        )
    with pytest.raises(ValueError, match="also listed as an input"):
        TabularClassificationData.from_data_frame(
            **{**FIELDS, "categorical_fields": ["label"]}, train_data_frame=table
        )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TabularClassificationData.from_csv(**FIELDS, train_file="nope.csv")
    with pytest.raises(TypeError, match="list of dicts"):
        TabularClassificationData.from_dicts(**FIELDS, train_dict=42)
    with pytest.raises(ValueError, match="either val_split or a validation table"):
        TabularClassificationData.from_data_frame(
            **FIELDS, train_data_frame=table, val_data_frame=table, val_split=0.2
        )
    with pytest.raises(ValueError, match="label 'maybe'"):
        TabularClassificationData.from_data_frame(
            **FIELDS, train_data_frame=table, val_data_frame=table.assign(label="maybe")
        )
    with pytest.raises(ValueError, match="duplicate column"):
        TabularClassificationData.from_data_frame(
            **FIELDS, train_data_frame=pd.concat([table, table["age"]], axis=1)
        )


@pytest.mark.parametrize("stage", ["val", "test", "predict"])
def test_categories_unseen_in_training_go_to_the_unknown_slot(table, stage):
    rows = table.iloc[:6].assign(color=["purple", "red", None, "teal", "blue", "green"])
    data = TabularClassificationData.from_data_frame(
        **FIELDS, train_data_frame=table, **{f"{stage}_data_frame": rows}
    )
    codes = data.dataset(stage).features[:, -1].tolist()
    assert codes[0] == 0 and codes[3] == 0
    assert all(code > 0 for code in codes[1:3] + codes[4:])
