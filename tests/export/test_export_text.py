"""ONNX export of the text classifier (MiniLM): dynamic batch and sequence axes, the tokenizer in the file."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from tiny_tasks import FOOD, KNOWN_TEXTS, SPORTS, onnx_feeds, preprocessed_batch, text_classifier

from flash.core.deploy.export import read_onnx_metadata


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    task = text_classifier()
    path = task.to_onnx(tmp_path_factory.mktemp("text") / "text.onnx")
    return task, path


def test_probabilities_match_pytorch_for_batches_of_any_shape(exported):
    task, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    for texts in (list(KNOWN_TEXTS), SPORTS + FOOD, ["Pie."]):
        batch = preprocessed_batch(task, texts)
        _, probabilities = session.run(None, onnx_feeds(batch))
        ordered = task.predict(texts, output="probabilities")
        order = task.predict_dataset(texts)[0].order
        expected = [list(ordered[i].values()) for i in order]
        np.testing.assert_allclose(probabilities, expected, atol=1e-4, rtol=0)
    known = preprocessed_batch(task, list(KNOWN_TEXTS))
    _, probabilities = session.run(None, onnx_feeds(known))
    labels = read_onnx_metadata(path)["labels"]
    order = task.predict_dataset(list(KNOWN_TEXTS))[0].order
    assert [labels[i] for i in probabilities.argmax(1)] == [list(KNOWN_TEXTS.values())[i] for i in order]


def test_the_file_alone_tokenizes_and_names_classes(exported):
    from tokenizers import Tokenizer

    task, path = exported
    meta = read_onnx_metadata(path)
    assert meta["labels"] == ["food", "sports"]
    assert meta["preprocessing"]["max_length"] == task.max_length
    assert meta["inputs"][0] == {
        "name": "input_ids",
        "dtype": "int64",
        "shape": ["batch", "input_ids_axis_1"],
    }
    tokenizer = Tokenizer.from_str(meta["tokenizer_json"])
    text = "The goalkeeper saved a penalty"
    assert tokenizer.encode(text).ids == task.tokenize([text])[0].tolist()
