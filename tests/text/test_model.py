"""TextClassifier: backbones, predict on texts and files, checkpoints, serving and export hooks."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

import flash
from flash.core.deploy.checkpoint import load_task
from flash.text import TextClassificationData, TextClassifier
from text.conftest import NEGATIVE, POSITIVE, QUIET

TEXTS = ["a lovely, warm and funny film", "dull", "i hated the clumsy script, it was painfully slow"]


def test_default_backbone_is_offline_and_blocks_are_embeddings_then_layers():
    assert "all-MiniLM-L6-v2" in TextClassifier.available_backbones()
    task = TextClassifier(num_classes=3)
    blocks = task.backbone_blocks
    transformer = task.backbone.transformer
    assert blocks[0] is transformer.embeddings
    assert blocks[1:] == list(transformer.encoder.layer) and len(blocks) == 7
    assert task.hparams.backbone == "all-MiniLM-L6-v2" and task.max_length == 256
    assert [g["name"] for g in task.param_groups()] == ["head"] + [f"backbone.{i}" for i in range(7)]
    assert transformer.training, "dropout must be active while finetuning"


def test_unknown_model_offline_names_it_and_lists_offline_backbones():
    with pytest.raises(RuntimeError, match=r"'someone/not-a-model'.*work offline: all-MiniLM-L6-v2"):
        TextClassifier(num_classes=2, backbone="someone/not-a-model")


def test_local_model_folder_works(tmp_path):
    from transformers import BertConfig, BertModel

    from flash.text.backbones import load_tokenizer

    folder = tmp_path / "tiny-bert"
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(folder)
    load_tokenizer("all-MiniLM-L6-v2").save_pretrained(folder)
    task = TextClassifier(num_classes=2, backbone=str(folder), max_length=16)
    assert len(task.backbone_blocks) == 3
    assert task(task.example_input(3)).shape == (3, 2)


def test_missing_local_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match=r"'\./no/such-model'.*folder .* does not exist"):
        TextClassifier(num_classes=2, backbone="./no/such-model")
    with pytest.raises(RuntimeError, match="does not exist"):
        TextClassifier(num_classes=2, backbone=str(tmp_path / "missing"))


def test_max_length_beyond_the_model_is_an_error():
    with pytest.raises(ValueError, match="exceeds what backbone"):
        TextClassifier(num_classes=2, max_length=4096)


def test_predict_string_list_file_and_frame_agree(trained, tmp_path):
    task, _, _ = trained
    labels = task.predict(TEXTS)
    assert labels == [task.predict(t) for t in TEXTS], "results come back in input order"
    assert labels[0] == "pos" and labels[2] == "neg"
    probabilities = task.predict(TEXTS, output="probabilities")
    assert set(probabilities[0]) == {"neg", "pos"} and sum(probabilities[0].values()) == pytest.approx(1)
    pd.DataFrame({"sentence": TEXTS, "id": [1, 2, 3]}).to_csv(tmp_path / "reviews.csv", index=False)
    (tmp_path / "reviews.txt").write_text("\n".join(TEXTS) + "\n\n")
    pd.DataFrame({"sentence": TEXTS}).to_json(tmp_path / "reviews.jsonl", orient="records", lines=True)
    assert task.predict(str(tmp_path / "reviews.csv")) == labels
    assert task.predict(tmp_path / "reviews.txt") == labels
    assert task.predict(tmp_path / "reviews.jsonl") == labels
    assert task.predict(pd.DataFrame({"sentence": TEXTS})) == labels
    assert task.predict(TEXTS, batch_size=1) == labels


def test_predict_truncates_a_text_far_longer_than_max_length(trained):
    from flash.text.tokenization import TruncationWarning

    task, _, _ = trained
    long_text = "a wonderful, moving film " * 5000
    with pytest.warns(TruncationWarning, match="longer than max_length=24"):
        assert task.predict([long_text, "dull"])[0] == task.predict(" ".join(long_text.split()[:18]))
    with pytest.warns(TruncationWarning):
        assert len(task.tokenize([long_text])[0]) == task.max_length


def test_predict_on_a_non_utf8_file_errors_clearly_or_takes_an_encoding(trained, tmp_path):
    task, _, _ = trained
    texts = ["un film très réussi", "ennuyeux à mourir"]
    (tmp_path / "avis.txt").write_bytes("\n".join(texts).encode("latin-1"))
    pd.DataFrame({"sentence": texts}).to_csv(tmp_path / "avis.csv", index=False, encoding="latin-1")
    for name in ("avis.txt", "avis.csv"):
        with pytest.raises(ValueError, match=rf"{name} is not valid utf-8 text.*encoding="):
            task.predict(tmp_path / name)
        assert task.predict(tmp_path / name, encoding="latin-1") == task.predict(texts)


def test_trainer_predict_returns_batches_in_input_order(trained):
    task, _, _ = trained
    data = TextClassificationData.from_lists(predict_data=TEXTS + POSITIVE, batch_size=4)
    batches = flash.Trainer(**QUIET).predict(task, datamodule=data)
    assert [label for batch in batches for label in batch] == task.predict(TEXTS + POSITIVE)


@pytest.mark.parametrize(
    ("inputs", "error", "message"),
    [
        ("", ValueError, "empty"),
        ([], ValueError, "empty"),
        (["fine", None], ValueError, "Item 1 of the inputs has no text"),
        (["fine", 3], TypeError, "Item 1 of the inputs must be a string"),
        (42, TypeError, "predicts on a string"),
        (pd.DataFrame({"a": [1], "b": [2]}), ValueError, "no column 'sentence'"),
    ],
)
def test_bad_predict_inputs(trained, inputs, error, message):
    task, _, _ = trained
    with pytest.raises(error, match=message):
        task.predict(inputs)


def test_unknown_output_is_an_error(trained):
    with pytest.raises(ValueError, match="labels, probabilities"):
        trained[0].predict("fine", output="scores")


def test_serving_and_export_hooks(trained):
    task, _, _ = trained
    assert task.domain == "text"
    assert task.decode_serve_input("a fine film") == "a fine film"
    for bad in ("", "   ", 3, None, ["a"]):
        with pytest.raises(ValueError):
            task.decode_serve_input(bad)
    example = task.example_input(batch_size=3)
    assert set(example) == {"input_ids", "attention_mask"}
    assert example["input_ids"].shape[0] == 3 and example["input_ids"].dtype == torch.long
    task.eval()
    with torch.inference_mode():
        assert task(example).shape == (3, 2)


@pytest.mark.slow
def test_checkpoint_holds_plain_values_and_loads_in_a_fresh_process(trained, tmp_path):
    task, checkpoint, _ = trained
    raw = torch.load(checkpoint, weights_only=True, map_location="cpu")
    hparams = raw["hyper_parameters"]
    assert hparams["labels"] == ["neg", "pos"] and hparams["backbone"] == "all-MiniLM-L6-v2"
    assert hparams["input_field"] == "sentence" and hparams["max_length"] == 24
    expected = task.predict(TEXTS, output="probabilities")
    script = (
        "import json, sys\n"
        "from flash.text import TextClassifier\n"
        "from flash.core.deploy.checkpoint import load_task\n"
        "task = TextClassifier.load_from_checkpoint(sys.argv[1])\n"
        "texts = json.loads(sys.argv[2])\n"
        "print(json.dumps([task.predict(texts, output='probabilities'), load_task(sys.argv[1]).predict(texts)]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(checkpoint), json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    probabilities, labels = json.loads(result.stdout.strip().splitlines()[-1])
    assert labels == task.predict(TEXTS)
    for got, want in zip(probabilities, expected):
        assert got == pytest.approx(want, abs=1e-5)
    assert isinstance(load_task(checkpoint), TextClassifier)


def test_multi_label_task_trains_and_predicts_lists():
    texts = ["funny and scary", "funny", "scary", "neither funny nor scary"] * 2
    frame = pd.DataFrame({"text": texts, "comedy": [1, 1, 0, 0] * 2, "horror": [1, 0, 1, 0] * 2})
    data = TextClassificationData.from_data_frame(
        "text", ["comedy", "horror"], train_data_frame=frame, batch_size=4
    )
    task = TextClassifier(num_classes=data.num_classes, multi_label=data.multi_label, max_length=12)
    flash.Trainer(max_epochs=1, **QUIET, enable_checkpointing=False).finetune(task, data, strategy="freeze")
    predicted = task.predict(["funny"])
    assert isinstance(predicted[0], list) and set(predicted[0]) <= {"comedy", "horror"}


def test_class_count_mismatch_is_caught_before_training():
    # named classes; integer classes 0 and 1 would be read as classes 0..2 of a 3-class task
    data = TextClassificationData.from_lists(
        train_data=POSITIVE + NEGATIVE, train_targets=["neg"] * 6 + ["pos"] * 6
    )
    with pytest.raises(ValueError, match="num_classes=3"):
        flash.Trainer(max_epochs=1, **QUIET).finetune(TextClassifier(num_classes=3), data)
