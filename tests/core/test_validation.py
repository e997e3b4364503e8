"""One set of argument checks: every public entry point refuses the same mistakes with the same message."""

from __future__ import annotations

import numpy as np
import pytest

from flash.core.data.tables import read_table, require_columns
from flash.core.utils.validation import check_int, check_number, check_optional_int
from flash.image import ImageClassificationData
from flash.tabular import TabularClassificationData
from flash.text import TextClassificationData
from toy import ToyClassifier, toy_data


@pytest.mark.parametrize("value", [True, False, 0, -1, 2.0, "8"])
def test_check_int_refuses_bools_floats_strings_and_small_numbers(value):
    with pytest.raises(ValueError, match=rf"batch_size must be a whole number >= 1, got {value!r}\."):
        check_int(value, "batch_size", 1)


def test_check_number_reads_its_interval():
    assert check_number(0.5, "hflip", "[0, 1]") == 0.5 and check_number(0, "dropout", "[0, 1)") == 0.0
    for bad in (1.0, True, float("nan"), "0.5"):
        with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
            check_number(bad, "dropout", "[0, 1)")
    assert check_optional_int(None, "num_workers") is None


def _builders(tmp_path):
    images = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    table = {"x": [1.0, 2.0, 3.0, 4.0], "y": ["a", "b", "a", "b"]}
    return {
        "image": lambda **kw: ImageClassificationData.from_numpy(images, ["a", "b", "a", "b"], **kw),
        "text": lambda **kw: TextClassificationData.from_lists(
            ["x", "y", "z", "w"], ["a", "b", "a", "b"], **kw
        ),
        "tabular": lambda **kw: TabularClassificationData.from_dicts(None, ["x"], "y", table, **kw),
    }


@pytest.mark.parametrize("domain", ["image", "text", "tabular"])
@pytest.mark.parametrize(("name", "value", "minimum"), [("batch_size", True, 1), ("batch_size", 0, 1),
                                                        ("num_workers", True, 0), ("num_workers", -1, 0)])  # fmt: skip
def test_every_data_module_refuses_bad_counts_alike(tmp_path, domain, name, value, minimum):
    with pytest.raises(ValueError, match=rf"^{name} must be a whole number >= {minimum}, got {value!r}\.$"):
        _builders(tmp_path)[domain](**{name: value})


def test_task_predict_refuses_bool_batch_size():
    task = ToyClassifier()
    with pytest.raises(ValueError, match=r"^batch_size must be a whole number >= 1, got True\.$"):
        task.predict([np.zeros(4, dtype=np.float32)], batch_size=True)
    with pytest.raises(ValueError, match=r"^num_workers must be a whole number >= 0, got -1\.$"):
        task.predict([np.zeros(4, dtype=np.float32)], num_workers=-1)


def test_one_table_reader_for_every_format(tmp_path):
    rows = [{"text": "42", "label": "a"}, {"text": "hi", "label": "b"}]
    (tmp_path / "t.csv").write_text("text,label\n42,a\nhi,b\n")
    (tmp_path / "t.tsv").write_text("text\tlabel\n42\ta\nhi\tb\n")
    (tmp_path / "t.jsonl").write_text('{"text": "42", "label": "a"}\n{"text": "hi", "label": "b"}\n')
    for name in ("t.csv", "t.tsv", "t.jsonl"):
        frame = read_table(tmp_path / name, "training", text_field="text")
        assert frame.astype(str).to_dict("records") == rows, name
    assert read_table(rows, "training").to_dict("records") == rows
    with pytest.raises(
        ValueError, match=r"The training data has no column 'sentence'\. Its columns are: text, label"
    ):
        require_columns(read_table(rows, "training"), ["sentence"], "training data")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_table(tmp_path / "missing.csv", "training")
    assert toy_data(n=8).num_classes == 2
