"""ONNX export of the tabular classifier and regressor, checked with onnxruntime on real rows."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from tiny_tasks import onnx_feeds, preprocessed_batch, tabular_classifier, tabular_regressor

from flash.core.deploy.export import read_onnx_metadata

ROWS = [
    {"x": 2.5, "z": 0.0, "color": "red"},
    {"x": -2.5, "z": 0.3, "color": "blue"},
    {"x": 0.4, "z": None, "color": "purple"},
    {"x": -0.1, "z": 4.0, "color": "green"},
    {"x": 0.9, "z": -2.2, "color": None},
]


@pytest.mark.parametrize("backbone", ["tabm", "mlp"])
def test_classifier_probabilities_match_pytorch(tmp_path, backbone):
    torch.manual_seed(0)
    task = tabular_classifier(backbone=backbone)
    path = task.to_onnx(tmp_path / "tab.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = preprocessed_batch(task, ROWS)
    logits, probabilities = session.run(None, onnx_feeds(batch))
    expected = task.predict(ROWS, output="probabilities")
    np.testing.assert_allclose(probabilities, [list(p.values()) for p in expected], atol=1e-4, rtol=0)
    assert logits.shape == (len(ROWS), 2)
    meta = read_onnx_metadata(path)
    assert meta["labels"] == ["high", "low"] and meta["domain"] == "tabular"
    assert meta["hyperparameters"]["preprocessing"] == task.hparams["preprocessing"]
    assert meta["inputs"][0]["shape"] == ["batch", batch.shape[1]]


def test_regressor_values_match_pytorch(tmp_path):
    task = tabular_regressor()
    path = task.to_onnx(tmp_path / "reg.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["output", "values"]
    _, values = session.run(None, onnx_feeds(preprocessed_batch(task, ROWS)))
    np.testing.assert_allclose(values[:, 0], task.predict(ROWS, output="values"), atol=1e-4, rtol=1e-5)
