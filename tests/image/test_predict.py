"""Prediction from every kind of input, through the Trainer, and from a checkpoint in a fresh process."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import textwrap

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from image_fixtures import COLOURS, colour_image, make_class_folders
from PIL import Image

import flash
from flash.image import ImageClassificationData, ImageClassifier

TRAINER_ARGS = {"enable_progress_bar": False, "logger": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A classifier of red and blue images, trained briefly, and its checkpoint."""
    root = make_class_folders(tmp_path_factory.mktemp("rb"), per_class=4)
    pl.seed_everything(0)
    data = ImageClassificationData.from_folders(root / "train", root / "val", batch_size=4, image_size=32)
    task = ImageClassifier(num_classes=data.num_classes)
    trainer = flash.Trainer(max_epochs=1, enable_checkpointing=False, **TRAINER_ARGS)
    trainer.finetune(task, data, strategy="freeze")
    checkpoint = root / "task.ckpt"
    trainer.save_checkpoint(checkpoint)
    return task, root, checkpoint


def test_predict_every_kind_of_input(trained):
    task, root, _ = trained
    red_file, blue_file = str(root / "val" / "red" / "0.jpg"), str(root / "val" / "blue" / "1.jpg")
    red = colour_image(COLOURS["red"], seed=7)
    blue = colour_image(COLOURS["blue"], seed=8)
    assert task.predict(red_file) == "red"
    assert task.predict([red_file, blue_file]) == ["red", "blue"]
    assert task.predict(root / "val") == ["blue"] * 4 + ["red"] * 4
    assert task.predict(red) == "red" and task.predict([blue, red]) == ["blue", "red"]
    assert task.predict(np.asarray(red)) == "red"
    assert task.predict(np.stack([np.asarray(blue), np.asarray(red)])) == ["blue", "red"]
    assert task.predict(torch.from_numpy(np.asarray(red)).permute(2, 0, 1)) == "red"
    assert (
        task.predict(torch.from_numpy(np.stack([np.asarray(red)] * 3)).permute(0, 3, 1, 2).float() / 255)
        == ["red"] * 3
    )
    assert task.predict([red] * 5, batch_size=2) == ["red"] * 5
    probabilities = task.predict(blue_file, output="probabilities")
    assert set(probabilities) == {"blue", "red"} and probabilities["blue"] > 0.5
    assert sum(probabilities.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("inputs", "error", "message"),
    [
        ("missing.jpg", FileNotFoundError, "missing.jpg"),
        ([], ValueError, "empty"),
        ([{"a": 1}], TypeError, "dict"),
        (42, TypeError, "int"),
        (np.zeros((2, 2, 2, 2, 2)), ValueError, "2 to 4 dimensions"),
    ],
)
def test_predict_bad_input(trained, inputs, error, message):
    task, _, _ = trained
    with pytest.raises(error, match=message):
        task.predict(inputs)


def test_predict_names_a_corrupt_file(trained, tmp_path):
    task, _, _ = trained
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="bad.jpg"):
        task.predict([str(bad)])


def test_trainer_predict_with_a_predict_data_module(trained):
    task, root, _ = trained
    files = [str(root / "val" / "red" / "0.jpg"), str(root / "val" / "blue" / "0.jpg")]
    data = ImageClassificationData.from_files(predict_files=files, batch_size=1)
    batches = flash.Trainer(**TRAINER_ARGS).predict(task, datamodule=data)
    assert [label for batch in batches for label in batch] == ["red", "blue"]


def test_checkpoint_predicts_in_a_fresh_process(trained):
    task, root, checkpoint = trained
    files = [str(root / "val" / "blue" / "2.jpg"), str(root / "val" / "red" / "3.jpg")]
    expected = task.predict(files, output="probabilities")
    script = textwrap.dedent(
        f"""
        import json
        from flash.image import ImageClassifier
        from flash.core.deploy.checkpoint import load_task
        task = ImageClassifier.load_from_checkpoint({str(checkpoint)!r})
        print(json.dumps({{"labels": task.predict({files!r}),
                           "probabilities": task.predict({files!r}, output="probabilities"),
                           "size": task.preprocessing["image_size"],
                           "any": load_task({str(checkpoint)!r}).predict({files[0]!r})}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["labels"] == ["blue", "red"] and out["any"] == "blue" and out["size"] == 32
    for got, want in zip(out["probabilities"], expected):
        assert got == pytest.approx(want, abs=1e-5)


def test_serving_hooks(trained):
    task, root, _ = trained
    raw = (root / "val" / "red" / "0.jpg").read_bytes()
    image = task.decode_serve_input(base64.b64encode(raw).decode())
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert task.predict(image) == "red"
    buffer = io.BytesIO()
    Image.new("LA", (8, 8)).save(buffer, "PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    assert task.decode_serve_input(uri).mode == "RGB"
    for value, message in (
        ("%%% not base64 %%%", "not valid base64"),
        (base64.b64encode(b"hello world").decode(), "not an image"),
        (42, "base64 string"),
        ("", "empty"),
    ):
        with pytest.raises(ValueError, match=message):
            task.decode_serve_input(value)
    example = task.example_input(batch_size=3)
    assert example.shape == (3, 3, 32, 32)
    assert task.eval()(example).shape == (3, 2)


def test_predict_refuses_an_image_file_over_the_pixel_limit_before_decoding_it(trained, tmp_path):
    from flash.core.data.decode_limits import decode_limits

    task = trained[0]
    bomb = tmp_path / "bomb.png"
    Image.new("1", (10000, 10000)).save(bomb)  # a few KB on disk, 100 megapixels decoded
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ValueError, match="max_image_pixels"):
        task.predict(str(bomb))
    small = tmp_path / "small.png"
    Image.new("RGB", (300, 200), (200, 30, 30)).save(small)
    with decode_limits(max_image_pixels=50_000), pytest.raises(ValueError, match="max_image_pixels"):
        task.predict(str(small))
    assert task.predict(str(small)) in COLOURS
