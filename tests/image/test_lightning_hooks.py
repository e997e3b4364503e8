"""Data and task meet in Lightning's own hooks: a plain ``lightning.Trainer`` trains as ``flash.Trainer``."""

from __future__ import annotations

import multiprocessing

import lightning.pytorch as pl
import pytest
from image_fixtures import make_class_folders
from lightning.pytorch.callbacks import Callback
from PIL import Image

import flash
from flash.image import ImageClassificationData, ImageClassifier
from flash.image.preprocessing import ImagePreprocessing

QUIET = {"enable_progress_bar": False, "logger": False, "enable_checkpointing": False,
         "enable_model_summary": False, "num_sanity_val_steps": 0}  # fmt: skip
IMAGENET_MEAN = [0.485, 0.456, 0.406]


class FirstBatch(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0 and trainer.current_epoch == 0:
            self.batch = batch


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_class_folders(
        tmp_path_factory.mktemp("hooks"), {"white": (255, 255, 255), "black": (0, 0, 0)}
    )


def test_plain_lightning_trainer_normalises_with_the_task_backbone(folders):
    data = ImageClassificationData.from_folders(
        folders / "train", folders / "val", batch_size=4, num_workers=0
    )
    task = ImageClassifier(
        num_classes=2, backbone="resnet18", pretrained=False, image_size=32, cache_features=False
    )
    first = FirstBatch()
    pl.Trainer(max_epochs=1, callbacks=[first], **QUIET).fit(task, datamodule=data)
    assert isinstance(task.preprocessing, ImagePreprocessing)
    assert data.preprocessing == task.preprocessing and list(data.preprocessing.mean) == IMAGENET_MEAN
    pixels = first.batch["input"]
    assert pixels.shape[-2:] == (32, 32)
    white = pixels[pixels > 0].mean().item()
    assert white == pytest.approx((1 - 0.449) / 0.226, abs=0.1), "ImageNet's mean and std, not 0.5/0.5"


def test_plain_lightning_trainer_checks_labels_against_the_task(folders):
    data = ImageClassificationData.from_folders(folders / "train", batch_size=4, num_workers=0)
    task = ImageClassifier(num_classes=3, pretrained=False, image_size=32)
    with pytest.raises(ValueError, match="num_classes=3, but the data has 2 classes"):
        pl.Trainer(max_epochs=1, **QUIET).fit(task, datamodule=data)
    named = ImageClassifier(num_classes=2, labels=["cat", "dog"], pretrained=False, image_size=32)
    with pytest.raises(ValueError, match="differ from the data's"):
        pl.Trainer(max_epochs=1, **QUIET).validate(named, datamodule=data.__class__.from_folders(
            folders / "train", folders / "val", batch_size=4, num_workers=0))  # fmt: skip


def test_data_image_size_travels_to_the_task_under_plain_lightning(folders, tmp_path):
    data = ImageClassificationData.from_folders(folders / "train", batch_size=4, num_workers=0, image_size=40)
    task = ImageClassifier(num_classes=2, pretrained=False)
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, **{**QUIET, "enable_checkpointing": True})
    trainer.fit(task, datamodule=data)
    assert task.preprocessing.image_size == 40 and task.hparams["preprocessing"]["image_size"] == 40
    path = tmp_path / "task.ckpt"
    trainer.save_checkpoint(path)
    loaded = ImageClassifier.load_from_checkpoint(path)
    assert loaded.preprocessing == task.preprocessing and loaded.example_input().shape[-1] == 40


def test_old_checkpoint_preprocessing_dict_still_loads():
    values = {
        "image_size": 48,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "crop_pct": 0.9,
        "interpolation": "bicubic",
    }
    task = ImageClassifier(num_classes=2, pretrained=False, preprocessing=values)
    assert task.preprocessing == values and task.preprocessing.to_dict() == values
    assert task.hparams["preprocessing"] == values


def _fit(trainer_class, root) -> dict[str, float]:
    pl.seed_everything(7)
    data = ImageClassificationData.from_folders(
        root / "train", root / "val", batch_size=4, num_workers=0, transform=_resize_32
    )
    task = ImageClassifier(num_classes=2, backbone="resnet18", pretrained=False, cache_features=False)
    trainer = trainer_class(max_epochs=2, **QUIET)
    trainer.fit(task, datamodule=data)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def _resize_32(image: Image.Image) -> Image.Image:
    return image.resize((32, 32))


def test_flash_and_lightning_trainers_give_the_same_metrics(folders):
    flash_metrics = _fit(flash.Trainer, folders)
    lightning_metrics = _fit(pl.Trainer, folders)
    assert set(flash_metrics) >= {"train_loss", "val_loss", "val_accuracy"}
    assert flash_metrics == pytest.approx(lightning_metrics, rel=1e-5, abs=1e-6)


class CountingResize:
    """Resizes to 32 px and counts the images it made, across loader worker processes."""

    def __init__(self) -> None:
        self.count = multiprocessing.get_context("fork").Value("i", 0)

    def __call__(self, image: Image.Image) -> Image.Image:
        with self.count.get_lock():
            self.count.value += 1
        return image.resize((32, 32))


class TrainBackboneRows(Callback):
    def __init__(self) -> None:
        self.rows: dict[int, int] = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        def count(module, args, output) -> None:
            if not trainer.validating:
                self.rows[trainer.current_epoch] = self.rows.get(trainer.current_epoch, 0) + len(args[0])

        pl_module.backbone.register_forward_hook(count)


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="counts across forked workers"
)
def test_frozen_features_are_computed_once_with_persistent_workers(tmp_path):
    root = make_class_folders(tmp_path, per_class=12, splits=("train",))  # 24 images
    counting = CountingResize()
    data = ImageClassificationData.from_folders(
        root / "train", batch_size=2, num_workers=2, transform=counting
    )
    task = ImageClassifier(num_classes=2, backbone="resnet18", pretrained=False, linear_probe=False)
    rows = TrainBackboneRows()
    flash.Trainer(max_epochs=3, callbacks=[rows], **QUIET).finetune(task, data, strategy="freeze")
    assert rows.rows == {0: 24}, "the frozen backbone sees each training image once in three epochs"
    # 24 for the features, plus what the workers made before the first epoch's switch (at most
    # two prefetched batches per worker); before the fix they made all 72 of the three epochs.
    assert counting.count.value <= 24 + 2 * 2 * 2 + 2
    assert data.dataset("train").pixels, "images again after training"


def test_test_only_images_take_their_classes_from_the_task(folders):
    task = ImageClassifier(num_classes=2, labels=["black", "white"], pretrained=False, image_size=32)
    data = ImageClassificationData.from_folders(test_folder=folders / "val", batch_size=4, num_workers=0)
    assert data.labels is None
    results = pl.Trainer(**QUIET).test(task, datamodule=data)
    assert data.labels == ["black", "white"] and "test_accuracy" in results[0]
