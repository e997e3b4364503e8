"""Image grids: the training batch un-normalised back to the original colours, and the worst
validation predictions ranked by the true class's probability."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from flash.image import ImageClassificationData, ImageClassifier
from flash.image.plots import _pixels, plot_worst_predictions, show_batch

COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255)}


@pytest.fixture(scope="module")
def solid_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("solid")
    for split, count in (("train", 3), ("val", 2)):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                Image.new("RGB", (40, 32), colour).save(folder / f"{k}.png")
    return root


@pytest.fixture(scope="module")
def data_and_task(solid_images):
    data = ImageClassificationData.from_folders(
        train_folder=str(solid_images / "train"),
        val_folder=str(solid_images / "val"),
        batch_size=4,
        image_size=32,
    )
    task = ImageClassifier(num_classes=data.num_classes)
    return data, task


def test_batch_pixels_are_the_original_colours(data_and_task):
    data, task = data_and_task
    data.attach_task(task)
    for stage in ("train", "val"):
        images = _pixels(data, stage, list(range(len(data.dataset(stage)))))
        assert images.shape[1:] == (32, 32, 3)
        for image, target in zip(images, data.splits[stage].targets):
            expected = np.array(COLOURS[data.labels[int(target)]]) / 255
            assert np.abs(image - expected).max() < 0.02


def test_show_batch_titles_each_image_with_its_class(data_and_task, tmp_path):
    data, task = data_and_task
    figure = show_batch(data, task, num_images=4)
    assert isinstance(figure, Figure)
    titles = [ax.get_title() for ax in figure.axes if ax.get_images()]
    first_batch = next(iter(data.train_dataloader()))
    assert titles == [data.labels[int(t)] for t in first_batch["target"][:4]]
    assert len(set(titles)) == 2  # shuffled like training batches, not one class after the other
    path = show_batch(data, num_images=16, path=tmp_path / "batch.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_worst_predictions_come_first_and_wrong_ones_are_red(data_and_task, tmp_path):
    from flash.core.utils.plots import validation_predictions

    data, task = data_and_task
    figure = plot_worst_predictions(task, data, num_images=3)
    result = validation_predictions(task, data)
    worst = np.argsort(result.true_class_probability, kind="stable")[:3]
    shown = [ax for ax in figure.axes if ax.get_images()]
    assert len(shown) == 3
    for ax, index in zip(shown, worst):
        true, predicted = result.labels[result.targets[index]], result.labels[result.predictions[index]]
        assert ax.get_title().startswith(f"true: {true}\npredicted: {predicted}")
        assert (ax.title.get_color() == "red") == (true != predicted)
    path = plot_worst_predictions(task, data, path=tmp_path / "worst.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_bad_arguments_say_what_is_wrong(data_and_task):
    data, task = data_and_task
    with pytest.raises(ValueError, match="num_images"):
        show_batch(data, num_images=0)
    with pytest.raises(ValueError, match="no test images"):
        show_batch(data, stage="test")
    with pytest.raises(TypeError, match="ImageClassificationData"):
        plot_worst_predictions(task, object())
