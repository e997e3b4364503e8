"""Plots: valid PNG files drawn from real runs, and errors that say what is missing."""

from __future__ import annotations

import csv

import lightning.pytorch as pl
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import flash
from flash.core.utils.plots import (
    confusion_matrix,
    plot_confusion_matrix,
    plot_lr_finder,
    plot_training_curves,
    read_history,
    validation_predictions,
)
from toy import ToyClassifier, toy_data

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_bytes=5000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG file"
    assert len(data) > min_bytes, f"{path} is only {len(data)} bytes"
    with Image.open(path) as image:
        image.verify()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pl.seed_everything(0)
    task, data = ToyClassifier(), toy_data(n=64, batch_size=16)
    trainer = flash.Trainer(
        max_epochs=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        default_root_dir=tmp_path_factory.mktemp("run"),
    )
    trainer.finetune(task, data, strategy="no_freeze")
    return task, data, trainer


def test_training_curves_from_history_and_from_csv_are_pngs(trained, tmp_path):
    _, _, trainer = trained
    path = plot_training_curves(trainer.history, tmp_path / "curves.png")
    assert path == tmp_path / "curves.png"
    assert_png(path)

    metrics = tmp_path / "metrics.csv"
    columns = sorted({k for row in trainer.history for k in row})
    with metrics.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(trainer.history)
    assert read_history(metrics) == read_history(trainer.history)
    figure = plot_training_curves(metrics)
    assert isinstance(figure, Figure)
    titles = [ax.get_title() for ax in figure.axes if ax.get_visible()]
    assert titles == ["loss", "accuracy", "f1"]
    loss_axis = figure.axes[0]
    assert [line.get_label() for line in loss_axis.get_lines()] == ["training", "validation"]
    assert len(loss_axis.get_lines()[0].get_xdata()) == 2  # one point per epoch


def test_training_curves_read_a_trainer_directly(trained, tmp_path):
    assert_png(plot_training_curves(trained[2], tmp_path / "c.png"))


def test_confusion_matrix_counts_the_validation_predictions(trained, tmp_path):
    task, data, _ = trained
    result = validation_predictions(task, data)
    assert result.labels == ["neg", "pos"]
    assert len(result.targets) == len(data.splits["val"]) == result.probabilities.shape[0]
    assert np.allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(result.targets, data.splits["val"].targets)

    matrix = confusion_matrix(result.targets, result.predictions, 2)
    assert matrix.sum() == len(result.targets)
    assert np.trace(matrix) == int((result.targets == result.predictions).sum())

    path = plot_confusion_matrix(task, data, tmp_path / "plots" / "confusion.png")
    assert_png(path)


def test_confusion_matrix_by_hand():
    matrix = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    with pytest.raises(ValueError, match=r"0\.\.2"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix([0, 1], [0], 3)


def test_lr_finder_plot(tmp_path):
    lrs = list(np.logspace(-6, 0, 40))
    losses = list(np.linspace(1.0, 0.2, 40))
    assert_png(plot_lr_finder(lrs, losses, suggestion=lrs[10], path=tmp_path / "lr.png"))
    with pytest.raises(ValueError, match="differ in length"):
        plot_lr_finder(lrs, losses[:-1])


def test_errors_name_the_problem(trained, tmp_path):
    task, data, _ = trained
    with pytest.raises(ValueError, match="history is empty"):
        plot_training_curves([])
    with pytest.raises(FileNotFoundError, match="No metrics file"):
        plot_training_curves(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="PNG"):
        plot_training_curves(trained[2].history, tmp_path / "curves.jpg")
    no_val = toy_data()
    no_val.splits["val"] = None
    with pytest.raises(ValueError, match="no val data"):
        plot_confusion_matrix(task, no_val)
    multi = ToyClassifier(multi_label=True)
    with pytest.raises(ValueError, match="multi-label"):
        plot_confusion_matrix(multi, data)
    with pytest.raises(ValueError, match="not a classifier"):
        validation_predictions(object(), data)
