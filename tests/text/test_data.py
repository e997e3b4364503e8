"""TextClassificationData: constructors, labels, tokenization, padding, batching and bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from flash.text import TextClassificationData
from flash.text.tokenization import TruncationWarning
from text.conftest import NEGATIVE, POSITIVE, sentiment_frame


def write_csv(path, frame=None, **kwargs):
    (frame if frame is not None else sentiment_frame()).to_csv(path, index=False, **kwargs)
    return path


def test_from_csv_with_lightning_flash_argument_names(tmp_path):
    write_csv(tmp_path / "train.csv")
    write_csv(tmp_path / "valid.csv", sentiment_frame().iloc[::3])
    data = TextClassificationData.from_csv(
        "sentence", "label", train_file=tmp_path / "train.csv", val_file=tmp_path / "valid.csv", batch_size=4
    )
    assert data.num_classes == 2 and data.labels == ["neg", "pos"] and not data.multi_label
    assert len(data.splits["train"]) == 12 and len(data.splits["val"]) == 4
    assert data.splits["train"].targets.tolist() == [1] * 6 + [0] * 6
    same = TextClassificationData.from_csv(
        "sentence", "label", train_file=tmp_path / "train.csv", valid_file=tmp_path / "valid.csv"
    )
    assert len(same.splits["val"]) == 4


def write_table(frame, path):
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".json":
        path.write_text(json.dumps(frame.to_dict("records")))
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("kind", ["csv", "json", "parquet", "data_frame"])
def test_every_constructor_takes_train_val_test_and_predict_with_flash_names(tmp_path, kind):
    frames = {
        "train": sentiment_frame(),
        "val": sentiment_frame().iloc[::3],
        "test": sentiment_frame().iloc[1::2],
        "predict": sentiment_frame()[["sentence"]].iloc[:5],
    }
    if kind == "data_frame":
        data = TextClassificationData.from_data_frame(
            "sentence",
            "label",
            *(frames[s] for s in ("train", "val", "test", "predict")),  # positional, in Flash's order
            batch_size=3,
            num_workers=0,
        )
    else:
        files = {s: write_table(f, tmp_path / f"{s}.{kind}") for s, f in frames.items()}
        data = getattr(TextClassificationData, f"from_{kind}")(
            "sentence",
            "label",
            train_file=files["train"],
            val_file=files["val"],
            test_file=files["test"],
            predict_file=files["predict"],
            batch_size=3,
            num_workers=0,
        )
    assert data.labels == ["neg", "pos"] and data.num_classes == 2
    assert {s: len(data.splits[s]) for s in frames} == {"train": 12, "val": 4, "test": 6, "predict": 5}
    assert data.splits["predict"].targets is None
    assert data.splits["test"].targets.tolist() == [1, 1, 1, 0, 0, 0]
    for loader in (data.train_dataloader(), data.val_dataloader(), data.test_dataloader()):
        assert loader.num_workers == 0
        assert max(len(b["target"]) for b in loader) == 3
    assert [len(b["input"]["input_ids"]) for b in data.predict_dataloader()] == [3, 2]


def test_num_workers_reaches_the_loaders():
    data = TextClassificationData.from_data_frame(
        "sentence",
        "label",
        train_data_frame=sentiment_frame(),
        val_data_frame=sentiment_frame(),
        num_workers=2,
    )
    assert data.train_dataloader().num_workers == 2 and data.val_dataloader().num_workers == 2


def test_several_target_fields_from_a_csv_file_make_it_multi_label(tmp_path):
    frame = pd.DataFrame(
        {
            "text": ["funny and scary", "funny", "scary", "neither"],
            "comedy": [1, 1, 0, 0],
            "horror": [1, 0, 1, 0],
        }
    )
    path = write_csv(tmp_path / "tags.csv", frame)
    data = TextClassificationData.from_csv("text", ["comedy", "horror"], train_file=path, val_file=path)
    assert data.multi_label and data.labels == ["comedy", "horror"] and data.num_classes == 2
    assert data.splits["val"].targets.tolist() == [[1, 1], [1, 0], [0, 1], [0, 0]]


def test_numeric_labels_stay_numbers_and_numeric_texts_stay_text(tmp_path):
    frame = pd.DataFrame({"sentence": ["42", "great", "7", "bad"], "label": [1, 1, 0, 0]})
    data = TextClassificationData.from_csv(
        "sentence", "label", train_file=write_csv(tmp_path / "t.csv", frame)
    )
    assert data.labels == [0, 1]
    assert data.splits["train"].inputs == ["42", "great", "7", "bad"]


def test_from_json_records_lines_and_field(tmp_path):
    rows = sentiment_frame().to_dict("records")
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "c.json").write_text(json.dumps({"data": rows}))
    for name, kwargs in (("a.json", {}), ("b.jsonl", {}), ("c.json", {"field": "data"})):
        data = TextClassificationData.from_json("sentence", "label", train_file=tmp_path / name, **kwargs)
        assert data.labels == ["neg", "pos"] and len(data.splits["train"]) == 12
    with pytest.raises(ValueError, match="field="):
        TextClassificationData.from_json("sentence", "label", train_file=tmp_path / "c.json")


def test_from_parquet_and_data_frame_and_lists(tmp_path):
    sentiment_frame().to_parquet(tmp_path / "t.parquet")
    parquet = TextClassificationData.from_parquet("sentence", "label", train_file=tmp_path / "t.parquet")
    frame = TextClassificationData.from_data_frame(
        "sentence",
        "label",
        train_data_frame=sentiment_frame(),
        predict_data_frame=sentiment_frame()[["sentence"]],
    )
    lists = TextClassificationData.from_lists(
        train_data=POSITIVE + NEGATIVE, train_targets=["pos"] * 6 + ["neg"] * 6, predict_data=["fine"]
    )
    for data in (parquet, frame, lists):
        assert data.labels == ["neg", "pos"]
        assert data.splits["train"].inputs == POSITIVE + NEGATIVE
    assert frame.splits["predict"].targets is None and lists.splits["predict"].inputs == ["fine"]


def test_several_target_fields_make_it_multi_label(tmp_path):
    frame = pd.DataFrame(
        {
            "text": ["funny and scary", "funny", "scary", "neither"],
            "comedy": [1, 1, 0, 0],
            "horror": [1, 0, 1, 0],
        }
    )
    data = TextClassificationData.from_data_frame("text", ["comedy", "horror"], train_data_frame=frame)
    assert data.multi_label and data.labels == ["comedy", "horror"]
    assert data.splits["train"].targets.tolist() == [[1, 1], [1, 0], [0, 1], [0, 0]]
    lists = TextClassificationData.from_lists(
        train_data=["funny and scary", "funny", "scary"],
        train_targets=[["comedy", "horror"], ["comedy"], ["horror"]],
    )
    assert lists.multi_label and lists.splits["train"].targets.tolist() == [[1, 1], [1, 0], [0, 1]]
    tags = pd.DataFrame(
        {"text": ["funny and scary", "funny", "scary"], "tags": ["comedy,horror", "comedy", "horror"]}
    )
    one_column = TextClassificationData.from_data_frame(
        "text", "tags", train_data_frame=tags, multi_label=True
    )
    assert one_column.labels == ["comedy", "horror"]
    assert one_column.splits["train"].targets.tolist() == [[1, 1], [1, 0], [0, 1]]


def test_val_split_is_stratified():
    data = TextClassificationData.from_data_frame(
        "sentence", "label", train_data_frame=sentiment_frame(), val_split=1 / 3
    )
    assert len(data.splits["train"]) == 8 and len(data.splits["val"]) == 4
    assert sorted(data.splits["val"].targets.tolist()) == [0, 0, 1, 1]


# -- tokenization, padding, batching -------------------------------------------------------------
def lengthy_data(n: int = 64, **kwargs) -> TextClassificationData:
    rng = np.random.default_rng(0)
    texts = [" ".join(["word"] * int(k)) for k in rng.integers(1, 40, size=n)]
    return TextClassificationData.from_lists(
        train_data=texts,
        train_targets=[i % 2 for i in range(n)],
        val_data=texts,
        val_targets=[i % 2 for i in range(n)],
        batch_size=8,
        **kwargs,
    )


def test_batches_are_padded_to_their_longest_text_and_grouped_by_length():
    data = lengthy_data()
    lengths = np.array([len(ids) for ids in data.token_ids("train")])
    train_widths, seen = [], []
    for batch in data.train_dataloader():
        ids, mask = batch["input"]["input_ids"], batch["input"]["attention_mask"]
        assert ids.shape == mask.shape and ids.shape[0] == batch["target"].shape[0]
        assert int(mask.sum(1).max()) == ids.shape[1], "padded to the longest text of the batch, no further"
        assert (ids[mask == 0] == 0).all()
        train_widths.append(ids.shape[1])
        seen.extend(mask.sum(1).tolist())
    assert sorted(seen) == sorted(lengths.tolist())
    assert sum(w * 8 for w in train_widths) < 0.8 * 8 * len(train_widths) * lengths.max()
    val_lengths = [int(x) for b in data.val_dataloader() for x in b["input"]["attention_mask"].sum(1)]
    assert val_lengths == sorted(val_lengths), "evaluation batches are sorted by length"


def test_training_batches_under_ddp_are_shared_out_across_ranks():
    """What Lightning does to the train loader on each of 2 ranks: inject a DistributedSampler."""
    from lightning.fabric.utilities.data import _replace_dunder_methods, _set_sampler_epoch
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

    data = lengthy_data(61)
    per_rank = []
    for rank in range(2):
        with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
            loader = data.train_dataloader()
        loader = _update_dataloader(loader, DistributedSampler(loader.dataset, num_replicas=2, rank=rank))
        _set_sampler_epoch(loader, 1)
        per_rank.append([batch["input"]["attention_mask"].sum(1).tolist() for batch in loader])
    assert len(per_rank[0]) == len(per_rank[1]) == 4, "61 texts in steps of 2 x 8: 4 batches per rank"
    lengths = sorted(len(ids) for ids in data.token_ids("train"))
    assert sorted(n for rank in per_rank for batch in rank for n in batch) == lengths, "each text once"


def test_tokenization_happens_once_not_every_epoch():
    data = lengthy_data(16)
    calls = []
    tokenizer = data.tokenizer
    original = tokenizer.__call__

    class Counting(type(tokenizer)):
        def __call__(self, *args, **kwargs):
            calls.append(1)
            return original(*args, **kwargs)

    tokenizer.__class__ = Counting
    try:
        for epoch in range(3):
            sampler = data.train_dataloader().batch_sampler
            sampler.set_epoch(epoch)
            list(data.train_dataloader())
            list(data.val_dataloader())
    finally:
        tokenizer.__class__ = Counting.__mro__[1]
    assert len(calls) == 2, "one tokenizer call for the training texts and one for the validation texts"


def test_text_longer_than_max_length_is_truncated_not_an_error():
    long_text = "an endless review " * 2000
    data = TextClassificationData.from_lists(
        train_data=[long_text, "short"], train_targets=[1, 0], max_length=32, batch_size=2
    )
    with pytest.warns(TruncationWarning, match="1 of 2 texts"):
        ids = data.token_ids("train")
    assert (
        len(ids[0]) == 32
        and ids[0][0] == data.tokenizer.cls_token_id
        and ids[0][-1] == data.tokenizer.sep_token_id
    )
    batch = next(iter(data.train_dataloader()))
    assert batch["input"]["input_ids"].shape == (2, 32)


# -- bad input ------------------------------------------------------------------------------------
def test_missing_column_lists_the_columns_there_are(tmp_path):
    write_csv(tmp_path / "train.csv")
    with pytest.raises(ValueError, match=r"no column 'review'.*columns are: sentence, label"):
        TextClassificationData.from_csv("review", "label", train_file=tmp_path / "train.csv")
    with pytest.raises(ValueError, match=r"training file train.csv has no column 'sentiment'"):
        TextClassificationData.from_csv("sentence", "sentiment", train_file=tmp_path / "train.csv")


def test_empty_or_missing_text_names_the_row_or_is_dropped_on_request(tmp_path):
    frame = sentiment_frame()
    frame.loc[3, "sentence"] = "   "
    frame.loc[7, "sentence"] = None
    path = write_csv(tmp_path / "train.csv", frame)
    with pytest.raises(ValueError, match=r"no text in column 'sentence' in rows 3, 7.*drop_empty=True"):
        TextClassificationData.from_csv("sentence", "label", train_file=path)
    with pytest.warns(UserWarning, match="Dropped 2 rows"):
        data = TextClassificationData.from_csv("sentence", "label", train_file=path, drop_empty=True)
    assert len(data.splits["train"]) == 10 and "   " not in data.splits["train"].inputs


def test_validation_label_never_seen_in_training(tmp_path):
    write_csv(tmp_path / "train.csv")
    val = pd.DataFrame({"sentence": ["so-so", "fine"], "label": ["pos", "meh"]})
    write_csv(tmp_path / "valid.csv", val)
    with pytest.raises(
        ValueError, match=r"validation file valid.csv item 1 has label 'meh'.*Training labels: neg, pos"
    ):
        TextClassificationData.from_csv(
            "sentence", "label", train_file=tmp_path / "train.csv", val_file=tmp_path / "valid.csv"
        )


def test_missing_label_names_the_row():
    frame = sentiment_frame()
    frame.loc[5, "label"] = None
    with pytest.raises(ValueError, match="item 5 is missing"):
        TextClassificationData.from_data_frame("sentence", "label", train_data_frame=frame)


def test_non_utf8_file_gets_a_clear_error_or_an_encoding(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("sentence,label\nun film tr\xe8s r\xe9ussi,1\nennuyeux,0\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.csv is not valid utf-8 text.*encoding="):
        TextClassificationData.from_csv("sentence", "label", train_file=path)
    data = TextClassificationData.from_csv("sentence", "label", train_file=path, encoding="latin-1")
    assert data.splits["train"].inputs[0] == "un film très réussi"
    (tmp_path / "latin.json").write_bytes(json.dumps([{"t": "é"}], ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ValueError, match="not valid utf-8"):
        TextClassificationData.from_json("t", predict_file=tmp_path / "latin.json")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"train_file": "nowhere.csv"}, FileNotFoundError, "does not exist"),
        ({}, ValueError, "No data given"),
        ({"train_file": "t.csv", "val_split": 0.5, "val_file": "t.csv"}, ValueError, "not both"),
        ({"train_file": "t.csv", "batch_size": 0}, ValueError, "batch_size"),
        ({"train_file": "t.csv", "max_length": 1}, ValueError, "max_length"),
    ],
)
def test_bad_arguments_fail_early(tmp_path, kwargs, error, message):
    write_csv(tmp_path / "t.csv")
    with pytest.raises(error, match=message):
        TextClassificationData.from_csv("sentence", "label", **kwargs)


def test_lists_of_different_lengths_and_missing_targets():
    with pytest.raises(ValueError, match="3 texts but train_targets has 2"):
        TextClassificationData.from_lists(train_data=["a", "b", "c"], train_targets=[0, 1])
    with pytest.raises(ValueError, match="needs train_targets"):
        TextClassificationData.from_lists(train_data=["a", "b"])


def test_target_fields_needed_for_training(tmp_path):
    with pytest.raises(ValueError, match="target_fields is needed"):
        TextClassificationData.from_csv("sentence", train_file=write_csv(tmp_path / "t.csv"))


def test_test_only_data_takes_its_classes_from_the_task(trained, tmp_path):
    task, _, _ = trained
    data = TextClassificationData.from_csv(
        "sentence", "label", test_file=write_csv(tmp_path / "test.csv"), batch_size=4
    )
    assert data.num_classes is None
    data.attach_task(task)
    assert data.labels == ["neg", "pos"] and data.splits["test"].targets.tolist() == [1] * 6 + [0] * 6
    batch = next(iter(data.test_dataloader()))
    assert isinstance(batch["input"]["input_ids"], torch.Tensor)
