"""Both torch ONNX exporters on the real text and tabular models (slow: the dynamo exporter takes a while)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from tiny_tasks import tabular_classifier, text_classifier

from flash.core.deploy.export import check_onnx, export_onnx


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("backbone", ["tabm", "tabm_pwl", "mlp_plr", "ft_transformer"])
def test_tabular_backbones_export_with_either_exporter(tmp_path, exporter, backbone):
    task = tabular_classifier(backbone=backbone)
    path = export_onnx(task, tmp_path / "tab.onnx", exporter=exporter)
    assert check_onnx(task, path, [task.example_input(5)], tolerance=1e-4) <= 1e-4


@pytest.mark.slow
def test_text_model_exports_with_dynamo(tmp_path):
    task = text_classifier()
    path = export_onnx(task, tmp_path / "text.onnx", exporter="dynamo")
    assert check_onnx(task, path, [task.example_input(3)], tolerance=1e-4) <= 1e-4
