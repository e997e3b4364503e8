"""ImageClassificationData: every constructor, the default and custom transforms, and bad input."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from image_fixtures import COLOURS, colour_image, image_files, make_class_folders
from lightning.pytorch.callbacks import Callback
from PIL import Image
from torchvision.transforms import v2

import flash
from flash.image import ImageClassificationData, ImageClassifier
from flash.image.io import open_image

TRAINER_ARGS = {"enable_progress_bar": False, "logger": False, "enable_checkpointing": False,
                "enable_model_summary": False}  # fmt: skip


class CountSteps(Callback):
    steps = 0

    def on_train_batch_start(self, *args) -> None:
        CountSteps.steps += 1


def finetune_fails_before_training(task, data, error, match):
    CountSteps.steps = 0
    trainer = flash.Trainer(max_epochs=1, callbacks=[CountSteps()], **TRAINER_ARGS)
    with pytest.raises(error, match=match):
        trainer.finetune(task, data, strategy="freeze")
    assert CountSteps.steps == 0


@pytest.fixture(scope="module")
def tiny_task():
    return ImageClassifier(num_classes=2, pretrained=False)


# -- from_folders -------------------------------------------------------------------------------
def test_from_folders_reads_classes_and_ignores_non_images(tmp_path):
    root = make_class_folders(tmp_path, per_class=3)
    for junk in (".DS_Store", "Thumbs.db", "notes.txt", "._0.jpg"):
        (root / "train" / "red" / junk).write_bytes(b"\x00\x01not an image")
    (root / "train" / ".hidden").mkdir()
    data = ImageClassificationData.from_folders(train_folder=root / "train", valid_folder=root / "val")
    assert data.labels == ["blue", "red"] and data.num_classes == 2
    assert len(data.splits["train"]) == 6 and len(data.splits["val"]) == 6
    batch = data.show_batch("val")
    assert batch["input"].shape == (6, 3, 224, 224) and batch["target"].tolist() == [0, 0, 0, 1, 1, 1]


def test_val_folder_and_valid_folder_are_aliases(tmp_path):
    root = make_class_folders(tmp_path)
    a = ImageClassificationData.from_folders(train_folder=root / "train", val_folder=root / "val")
    b = ImageClassificationData.from_folders(train_folder=root / "train", valid_folder=root / "val")
    assert a.splits["val"].inputs == b.splits["val"].inputs
    with pytest.raises(ValueError, match="not both"):
        ImageClassificationData.from_folders(
            root / "train", val_folder=root / "val", valid_folder=root / "val"
        )


def test_val_split_is_stratified(tmp_path):
    root = make_class_folders(tmp_path, per_class=10, splits=("train",))
    data = ImageClassificationData.from_folders(train_folder=root / "train", val_split=0.2)
    assert sorted(data.splits["val"].targets.tolist()) == [0, 0, 1, 1]
    assert len(data.splits["train"]) == 16


def test_predict_folder(tmp_path):
    make_class_folders(tmp_path, splits=("train",))
    loose = tmp_path / "loose"
    loose.mkdir()
    colour_image(COLOURS["red"]).save(loose / "a.png")
    (loose / ".DS_Store").write_bytes(b"junk")
    data = ImageClassificationData.from_folders(predict_folder=loose)
    assert data.splits["predict"].inputs == [str(loose / "a.png")]


@pytest.mark.parametrize("what", ["missing", "file", "empty", "no_class_folders"])
def test_bad_folders_name_the_problem(tmp_path, what):
    target = tmp_path / "train"
    if what == "file":
        target.write_text("x")
    elif what == "empty":
        target.mkdir()
    elif what == "no_class_folders":
        target.mkdir()
        colour_image(COLOURS["red"]).save(target / "a.jpg")
    errors = {"missing": (FileNotFoundError, "does not exist"), "file": (NotADirectoryError, "is a file"),
              "empty": (ValueError, "no class subfolders"), "no_class_folders": (ValueError, "subfolder per class")}  # fmt: skip
    error, message = errors[what]
    with pytest.raises(error, match=message) as info:
        ImageClassificationData.from_folders(train_folder=target)
    assert str(target) in str(info.value)


def test_class_folder_without_images(tmp_path):
    root = make_class_folders(tmp_path)
    empty = root / "train" / "yellow"
    empty.mkdir()
    (empty / "Thumbs.db").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"yellow hold no images \(found only Thumbs.db\)"):
        ImageClassificationData.from_folders(train_folder=root / "train")


def test_validation_classes_unknown_to_training(tmp_path):
    root = make_class_folders(tmp_path)
    make_class_folders(tmp_path, {"green": COLOURS["green"]}, splits=("val",))
    with pytest.raises(ValueError, match="green that train_folder lacks"):
        ImageClassificationData.from_folders(train_folder=root / "train", val_folder=root / "val")
    files = image_files(root / "train")
    with pytest.raises(ValueError, match="'green', which the training data never has"):
        ImageClassificationData.from_files(
            files, ["red"] * len(files), val_files=files[:1], val_targets=["green"]
        )


def test_num_classes_that_disagrees_with_the_data_fails_before_training(tmp_path):
    root = make_class_folders(tmp_path)
    data = ImageClassificationData.from_folders(train_folder=root / "train", batch_size=4)
    task = ImageClassifier(num_classes=3, pretrained=False)
    finetune_fails_before_training(task, data, ValueError, "num_classes=3, but the data has 2 classes")


# -- unreadable and unusual images --------------------------------------------------------------
def _corrupt(root):
    bad = root / "train" / "red" / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    buffer = io.BytesIO()
    colour_image(COLOURS["blue"], (64, 64)).save(buffer, "JPEG")
    truncated = root / "train" / "blue" / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return bad, truncated


def test_corrupt_and_truncated_jpegs_are_named_before_training(tmp_path, tiny_task):
    root = make_class_folders(tmp_path)
    bad, truncated = _corrupt(root)
    data = ImageClassificationData.from_folders(train_folder=root / "train", batch_size=4)
    CountSteps.steps = 0
    with pytest.raises(ValueError, match="2 train image") as info:
        flash.Trainer(max_epochs=1, callbacks=[CountSteps()], **TRAINER_ARGS).finetune(tiny_task, data)
    assert str(bad) in str(info.value) and str(truncated) in str(info.value)
    assert "on_bad_image='skip'" in str(info.value)
    assert CountSteps.steps == 0


def test_unreadable_images_skipped_with_a_warning_when_asked(tmp_path):
    root = make_class_folders(tmp_path)
    bad, _truncated = _corrupt(root)
    data = ImageClassificationData.from_folders(
        train_folder=root / "train", batch_size=4, on_bad_image="skip"
    )
    with pytest.warns(UserWarning, match="Leaving out 2 unreadable train") as record:
        dataset = data.dataset("train")
    assert str(bad) in str(record[0].message)
    assert len(dataset) == 8 and str(bad) not in dataset.inputs and len(data.splits["train"]) == 8
    assert len(list(data.train_dataloader())) == 2


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return str(path)


def test_modes_are_converted_to_rgb(tmp_path):
    grey = Image.fromarray(np.full((20, 30), 128, np.uint8), "L")
    rgba = Image.new("RGBA", (30, 20), (255, 0, 0, 0))  # fully transparent red
    palette = Image.new("P", (30, 20), 3)
    palette.putpalette([0, 0, 0] * 3 + [0, 255, 0] + [0, 0, 0] * 252)
    deep = Image.fromarray(np.full((20, 30), 65535, np.uint16))  # 16-bit white
    cmyk = Image.new("CMYK", (30, 20), (0, 255, 255, 0))  # red
    bilevel = Image.new("1", (30, 20), 1)
    paths = {
        "grey": _save(grey, tmp_path / "grey.png"),
        "rgba": _save(rgba, tmp_path / "rgba.png"),
        "palette": _save(palette, tmp_path / "palette.gif"),
        "deep": _save(deep, tmp_path / "deep.png"),
        "cmyk": _save(cmyk, tmp_path / "cmyk.jpg"),
        "bilevel": _save(bilevel, tmp_path / "bilevel.bmp"),
    }
    expected = {"grey": (128, 128, 128), "rgba": (255, 255, 255), "palette": (0, 255, 0),
                "deep": (255, 255, 255), "cmyk": (255, 0, 0), "bilevel": (255, 255, 255)}  # fmt: skip
    for name, path in paths.items():
        image = open_image(path)
        assert image.mode == "RGB", name
        assert np.abs(np.asarray(image)[10, 15].astype(int) - expected[name]).max() <= 3, name
    data = ImageClassificationData.from_files(
        list(paths.values()), ["a", "b", "a", "b", "a", "b"], batch_size=6
    )
    batch = next(iter(data.train_dataloader()))
    assert batch["input"].shape == (6, 3, 224, 224)


# -- other constructors -------------------------------------------------------------------------
def test_from_files_with_missing_file():
    with pytest.raises(FileNotFoundError, match="nowhere.jpg"):
        ImageClassificationData.from_files(["nowhere.jpg"], ["a"])


def test_from_csv_single_label_resolves_paths_and_extensions(tmp_path):
    make_class_folders(tmp_path / "images", per_class=2, splits=("all",))
    rows = [{"image": f"all/{c}/{i}", "label": c} for c in ("red", "blue") for i in range(2)]
    pd.DataFrame(rows).to_csv(tmp_path / "images" / "train.csv", index=False)
    data = ImageClassificationData.from_csv("image", "label", train_file=tmp_path / "images" / "train.csv")
    assert data.labels == ["blue", "red"] and not data.multi_label
    assert data.splits["train"].inputs[0].endswith("0.jpg")
    with pytest.raises(KeyError, match="no column 'file'; columns: image, label"):
        ImageClassificationData.from_csv("file", "label", train_file=tmp_path / "images" / "train.csv")


def test_from_data_frame_multi_label_columns(tmp_path):
    root = make_class_folders(tmp_path, per_class=2, splits=("all",))
    files = image_files(root)
    frame = pd.DataFrame({"path": files, "warm": [1, 0, 0, 1], "cool": [0, 1, 1, 1]})
    data = ImageClassificationData.from_data_frame(
        "path", ["warm", "cool"], train_data_frame=frame, batch_size=4
    )
    assert data.multi_label and data.labels == ["warm", "cool"]  # the columns, in their order
    batch = next(iter(data.train_dataloader()))
    assert batch["target"].shape == (4, 2)
    task = ImageClassifier(num_classes=2, multi_label=True, pretrained=False)
    flash.Trainer(max_epochs=1, **TRAINER_ARGS).finetune(task, data, strategy="freeze")
    assert task.hparams["labels"] == ["warm", "cool"]
    predicted = task.predict(files[:2])
    assert all(isinstance(p, list) for p in predicted)


def test_from_numpy_and_tensors():
    images = np.stack(
        [np.asarray(colour_image(COLOURS[c], (24, 24), i)) for i, c in enumerate(["red", "blue"] * 3)]
    )
    targets = ["red", "blue"] * 3
    data = ImageClassificationData.from_numpy(images, targets, val_data=images[:2] / 255.0, val_targets=targets[:2],
                                              image_size=32, batch_size=6)  # fmt: skip
    assert data.labels == ["blue", "red"]
    assert next(iter(data.train_dataloader()))["input"].shape == (6, 3, 32, 32)
    assert next(iter(data.val_dataloader()))["input"].shape == (2, 3, 32, 32)
    grey = ImageClassificationData.from_numpy(images[..., 0], targets, image_size=32)
    assert next(iter(grey.train_dataloader()))["input"].shape[1] == 3
    tensors = torch.from_numpy(images).permute(0, 3, 1, 2)
    data = ImageClassificationData.from_tensors(
        tensors, torch.tensor([1, 0] * 3), image_size=32, batch_size=6
    )
    assert data.labels == [0, 1]
    assert next(iter(data.train_dataloader()))["input"].shape == (6, 3, 32, 32)
    with pytest.raises(ValueError, match="channels-first"):
        ImageClassificationData.from_tensors(torch.from_numpy(images), targets)
    with pytest.raises(ValueError, match="6 train images but 2 train targets"):
        ImageClassificationData.from_numpy(images, targets[:2])


# -- transforms ---------------------------------------------------------------------------------
def test_default_transforms_follow_the_backbone(tmp_path):
    root = make_class_folders(tmp_path, {"white": (255, 255, 255), "black": (0, 0, 0)}, per_class=2)
    data = ImageClassificationData.from_folders(root / "train", root / "val", batch_size=4)
    lite = ImageClassifier(num_classes=2, pretrained=False, image_size=48)
    data.attach_task(lite)  # mean 0.5, std 0.5
    val = next(iter(data.val_dataloader()))["input"]
    assert val.shape == (4, 3, 48, 48)
    assert val[val > 0].mean().item() == pytest.approx(1.0, abs=0.05)  # white: (1 - 0.5) / 0.5
    assert val.is_contiguous(memory_format=torch.channels_last)
    resnet = ImageClassifier(num_classes=2, backbone="resnet18", pretrained=False)
    data.attach_task(resnet)  # ImageNet mean and std, 224 px, crop_pct 0.95
    val = next(iter(data.val_dataloader()))["input"]
    assert val.shape == (4, 3, 224, 224)
    assert val[val > 0].mean().item() == pytest.approx((1 - 0.449) / 0.226, abs=0.1)
    train = next(iter(data.train_dataloader()))["input"]
    assert train.shape == (4, 3, 224, 224)


def test_data_image_size_wins_and_travels_to_the_task(tmp_path):
    root = make_class_folders(tmp_path, per_class=2)
    data = ImageClassificationData.from_folders(root / "train", image_size=40)
    task = ImageClassifier(num_classes=2, pretrained=False)
    data.attach_task(task)
    assert next(iter(data.train_dataloader()))["input"].shape[-2:] == (40, 40)
    assert task.preprocessing["image_size"] == 40 and task.hparams["preprocessing"]["image_size"] == 40


def test_user_transform_replaces_the_default(tmp_path):
    root = make_class_folders(tmp_path, per_class=2)
    transform = v2.Compose([v2.PILToTensor(), v2.Resize((20, 28)), v2.ToDtype(torch.float32, scale=True)])
    data = ImageClassificationData.from_folders(
        root / "train", root / "val", transform=transform, batch_size=4
    )
    batch = next(iter(data.train_dataloader()))
    assert batch["input"].shape == (4, 3, 20, 28)
    assert batch["input"].min() >= 0 and batch["input"].max() <= 1  # left as the transform made it


# -- the decoded-image cache --------------------------------------------------------------------
def test_images_are_decoded_once(tmp_path, monkeypatch):
    import flash.image.transforms as transforms

    calls = []
    original = transforms.read_any
    monkeypatch.setattr(transforms, "read_any", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    root = make_class_folders(tmp_path, per_class=3)
    data = ImageClassificationData.from_folders(root / "train", batch_size=4)
    for _ in range(3):
        list(data.train_dataloader())
    assert len(calls) == 6
    assert data.cache.bytes == 6 * 256 * 320 * 3  # short side resized to 224 / 0.875


def test_cache_respects_its_bound(tmp_path, monkeypatch):
    import flash.image.transforms as transforms

    calls = []
    original = transforms.read_any
    monkeypatch.setattr(transforms, "read_any", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    root = make_class_folders(tmp_path, per_class=3)
    limit_mb = 2.5 * 256 * 320 * 3 / 2**20  # room for two images and a half
    data = ImageClassificationData.from_folders(root / "train", batch_size=4, cache_mb=limit_mb)
    for _ in range(2):
        list(data.train_dataloader())
    assert data.cache.bytes <= limit_mb * 2**20 and len(data.cache) == 2
    assert len(calls) == 2 + 2 * 4  # the two cached ones once, the others every epoch
    off = ImageClassificationData.from_folders(root / "train", batch_size=4, cache_mb=0)
    assert off.cache is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"image_size": 4}, "image_size"),
        ({"on_bad_image": "ignore"}, "on_bad_image"),
        ({"cache_mb": -1}, "cache_mb"),
        ({"hflip": 2}, "hflip"),
        ({"crop_scale": (0.5, 0.2)}, "crop_scale"),
        ({"transform": "resize"}, "callable"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    root = make_class_folders(tmp_path, per_class=1, splits=("train",))
    with pytest.raises((ValueError, TypeError), match=message):
        ImageClassificationData.from_folders(root / "train", **kwargs)


def test_no_warnings_for_clean_data(tmp_path):
    root = make_class_folders(tmp_path, per_class=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = ImageClassificationData.from_folders(root / "train", root / "val", batch_size=4)
        list(data.train_dataloader())
