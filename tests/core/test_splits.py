"""The one split-and-label funnel every domain's constructors end in."""

from __future__ import annotations

import numpy as np
import pytest

from flash.core.data.splits import encode_pending, encode_splits


def test_classes_come_from_training_and_val_split_is_stratified():
    inputs = list(range(20))
    targets = ["b"] * 10 + ["a"] * 10
    encoded = encode_splits({"train": inputs}, {"train": targets}, val_split=0.2, seed=1)
    assert encoded.labels == ["a", "b"] and not encoded.multi_label
    val = encoded.splits["val"]
    assert len(val) == 4 and sorted(val.targets.tolist()) == [0, 0, 1, 1]
    assert sorted(encoded.splits["train"].inputs + val.inputs) == inputs


def test_lists_of_classes_and_a_0_1_matrix_encode_alike():
    lists = encode_splits({"train": [1, 2, 3]}, {"train": [["x"], ["x", "y"], []]})
    matrix = encode_splits(
        {"train": [1, 2, 3]}, {"train": np.array([[1, 0], [1, 1], [0, 0]])}, labels=["x", "y"]
    )
    assert lists.multi_label and matrix.multi_label and lists.labels == matrix.labels == ["x", "y"]
    assert np.array_equal(lists.splits["train"].targets, matrix.splits["train"].targets)


def test_unknown_class_and_length_mismatch_name_the_stage():
    with pytest.raises(ValueError, match="val item 0 has label 'c'"):
        encode_splits({"train": [1, 2], "val": [3]}, {"train": ["a", "b"], "val": ["c"]})
    with pytest.raises(ValueError, match="2 train images but 1 train targets"):
        encode_splits({"train": [1, 2]}, {"train": ["a"]}, noun="images")


def test_without_training_data_targets_wait_for_a_task():
    encoded = encode_splits({"test": [1, 2]}, {"test": ["dog", "cat"]})
    assert encoded.labels is None and encoded.splits["test"].targets is None
    encode_pending(encoded.splits, encoded.pending, ["cat", "dog"], False)
    assert encoded.splits["test"].targets.tolist() == [1, 0] and not encoded.pending


def test_regression_keeps_values():
    encoded = encode_splits({"train": [1, 2, 3, 4]}, {"train": [[0.5], [1.5], [2.0], [3.0]]}, regression=True,
                            val_split=0.25)  # fmt: skip
    assert encoded.labels is None and encoded.splits["train"].targets.dtype == np.float32
    assert len(encoded.splits["val"]) == 1
