"""ONNX export of the image classifier (EfficientNet-Lite0), checked with onnxruntime on real images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from tiny_tasks import color_image, image_classifier, onnx_feeds, preprocessed_batch

from flash.core.deploy.export import export_onnx, read_onnx_metadata


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return image_classifier(tmp_path_factory.mktemp("images"))


def test_probabilities_match_pytorch_and_the_file_describes_its_input(task, tmp_path):
    path = task.to_onnx(tmp_path / "image.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = [color_image("red", 11), color_image("blue", 12), color_image("blue", 13)]
    for batch_images in (images, images[:1]):
        _, probabilities = session.run(None, onnx_feeds(preprocessed_batch(task, batch_images)))
        expected = task.predict(batch_images, output="probabilities")
        np.testing.assert_allclose(probabilities, [list(p.values()) for p in expected], atol=1e-4, rtol=0)
    meta = read_onnx_metadata(path)
    assert [meta["labels"][i] for i in probabilities.argmax(1)] == ["red"]
    size = task.preprocessing["image_size"]
    assert meta["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 3, size, size]}]
    assert meta["preprocessing"] == task.preprocessing
    assert meta["domain"] == "image" and meta["hyperparameters"]["backbone"] == "efficientnet_lite0"


@pytest.mark.slow
def test_the_dynamo_exporter_works_too(task, tmp_path):
    export_onnx(task, tmp_path / "image.onnx", exporter="dynamo")
