"""ONNX export of the toy classifier: same probabilities as PyTorch, dynamic batch, metadata that stands alone."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from servable_toy import ServableToy

from flash.core.deploy.export import ExportCheckError, export_onnx, read_onnx_metadata


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_toy_export_matches_pytorch_at_any_batch_size(tmp_path, exporter):
    torch.manual_seed(0)
    task = ServableToy()
    path = export_onnx(task, tmp_path / "toy.onnx", exporter=exporter)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities"]
    for batch in (1, 7, 64):
        x = torch.randn(batch, 4)
        logits, probabilities = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            expected = torch.softmax(task(x), dim=-1).numpy()
        np.testing.assert_allclose(probabilities, expected, atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), expected, atol=1e-4)
    meta = read_onnx_metadata(path)
    assert meta["labels"] == ["neg", "pos"]
    assert meta["multi_label"] is False
    assert meta["task"].endswith("ServableToy")
    assert meta["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 4]}]
    assert meta["hyperparameters"]["num_classes"] == 2
    assert list(tmp_path.iterdir()) == [path]


def test_task_to_onnx_keeps_training_mode(tmp_path):
    task = ServableToy()
    task.train()
    out = task.to_onnx(tmp_path / "sub" / "toy.onnx")
    assert out == tmp_path / "sub" / "toy.onnx" and out.is_file()
    assert task.training


def test_a_graph_that_differs_from_pytorch_is_caught(tmp_path):
    class Drifting(ServableToy):
        def forward(self, x):
            out = super().forward(x)
            return out + 1e-2 * torch.randn_like(out) if not torch.jit.is_tracing() else out

    with pytest.raises(ExportCheckError, match="differ"):
        export_onnx(Drifting(), tmp_path / "drift.onnx", exporter="torchscript")


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="exporter"):
        export_onnx(ServableToy(), tmp_path / "x.onnx", exporter="tflite")
    with pytest.raises(TypeError, match="flash task"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="tensor"):
        export_onnx(ServableToy(), tmp_path / "x.onnx", example_input=[[1, 2, 3, 4]])
    with pytest.raises(IsADirectoryError):
        export_onnx(ServableToy(), tmp_path)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a flash checkpoint"):
        export_onnx(junk, tmp_path / "x.onnx")
