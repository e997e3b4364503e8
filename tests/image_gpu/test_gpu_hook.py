"""gpu_loader_for: the hook an image data module calls to switch to the device input path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gpu_test_images import image_folder, write_image
from torch import nn

import flash
from flash.core.data.datamodule import DataModule, Split
from flash.core.data.device_loader import DeviceLoader
from flash.core.model.classification import ClassificationTask
from flash.image import ImageClassificationData, ImageClassifier
from flash.image.gpu_pipeline import gpu_loader_for

PREPROCESSING = {
    "image_size": 32,
    "mean": [0.5] * 3,
    "std": [0.5] * 3,
    "crop_pct": 0.875,
    "interpolation": "bilinear",
}


class FolderData(DataModule):
    """A data module of image files whose loaders take the device path on ``device``, as the hook is wired."""

    def __init__(self, *args, device=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.device = device

    def _loader(self, stage):
        loader = gpu_loader_for(self, stage, PREPROCESSING, device=self.device, scale=(0.5, 1.0))
        return loader if loader is not None else super()._loader(stage)


class TinyCnn(ClassificationTask):
    def __init__(self) -> None:
        backbone = nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        super().__init__(backbone, nn.Linear(4, 2), num_classes=2)


def folder_data(tmp_path, device="cpu", inputs=None) -> FolderData:
    paths, targets = image_folder(tmp_path, count=6)
    inputs = [str(p) for p in paths] if inputs is None else inputs
    return FolderData(
        Split(inputs, targets), Split(inputs[:4], targets[:4]), labels=["a", "b"], batch_size=4, num_workers=0,
        seed=3, device=device,
    )  # fmt: skip


def test_it_builds_the_device_path_from_the_data_module(tmp_path):
    data = folder_data(tmp_path)
    train = data.train_dataloader()
    assert isinstance(train, DeviceLoader) and len(train) == 2
    batches = list(train)
    assert batches[0]["input"].shape == (4, 3, 32, 32) and batches[0]["input"].dtype == torch.float32
    first_epoch = torch.cat([b["target"] for b in batches]).tolist()
    assert sorted(first_epoch) == sorted(data.splits["train"].targets.tolist())
    val = data.val_dataloader()
    assert torch.equal(next(iter(val))["target"], torch.as_tensor(data.splits["val"].targets))


def test_lightning_trains_with_the_hook_wired(tmp_path):
    data = folder_data(tmp_path)
    trainer = flash.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.finetune(TinyCnn(), data, strategy="no_freeze")
    assert trainer.global_step == 4 and "val_accuracy" in trainer.callback_metrics


def test_it_steps_aside_where_it_does_not_apply(tmp_path):
    on_trainer_device = folder_data(tmp_path, device=None)
    assert gpu_loader_for(on_trainer_device, "train", PREPROCESSING) is None  # not attached to a trainer
    trainer = flash.Trainer(accelerator="cpu", logger=False)
    on_trainer_device.trainer = trainer
    assert gpu_loader_for(on_trainer_device, "train", PREPROCESSING) is None  # a CPU trainer
    assert gpu_loader_for(on_trainer_device, "test", PREPROCESSING) is None  # no test data
    arrays = folder_data(tmp_path, inputs=[np.zeros((8, 8, 3), np.uint8)] * 6)
    assert gpu_loader_for(arrays, "train", PREPROCESSING, device="cpu") is None
    assert gpu_loader_for(folder_data(tmp_path), "train", PREPROCESSING, enabled=False, device="cpu") is None


def test_asking_for_it_where_it_cannot_run_says_why(tmp_path):
    data = folder_data(tmp_path, device=None)
    data.trainer = flash.Trainer(accelerator="cpu", logger=False)
    with pytest.raises(RuntimeError, match="runs on cpu, not on a CUDA GPU"):
        gpu_loader_for(data, "train", PREPROCESSING, enabled=True)


# -- wired into flash.image.ImageClassificationData ---------------------------------------------------
class DeviceFolderData(ImageClassificationData):
    """ImageClassificationData with the hook wired as the image module is told to wire it, forced
    onto the CPU device here (on a GPU machine the hook picks the trainer's CUDA device itself)."""

    def _loader(self, stage):
        loader = gpu_loader_for(self, stage, device="cpu")
        return loader if loader is not None else super()._loader(stage)


def image_folders(root, per_class=3):
    for split in ("train", "val"):
        for label in ("ants", "bees"):
            for i in range(per_class):
                write_image(
                    root / split / label / f"{i}.jpg", 60 + 5 * i, 80 - 4 * i, seed=i + 3 * (label == "bees")
                )
    return root / "train", root / "val"


def test_the_device_path_gives_what_the_cpu_path_gives_for_evaluation(tmp_path):
    train, val = image_folders(tmp_path)
    cpu = ImageClassificationData.from_folders(train, val, batch_size=6, num_workers=0, image_size=32)
    device = DeviceFolderData.from_folders(train, val, batch_size=6, num_workers=0, image_size=32)
    expected, got = next(iter(cpu.val_dataloader())), next(iter(device.val_dataloader()))
    assert isinstance(device.val_dataloader(), DeviceLoader)
    assert torch.equal(expected["target"], got["target"]) and torch.equal(expected["index"], got["index"])
    assert got["input"].shape == expected["input"].shape == (6, 3, 32, 32)
    assert got["input"].is_contiguous(memory_format=torch.channels_last)
    levels = (got["input"] - expected["input"]).abs() * 0.5 * 255  # the default backbone's std is 0.5
    assert levels.mean() < 2.0


def test_custom_transforms_and_skipping_bad_images_keep_the_cpu_path(tmp_path):
    train, val = image_folders(tmp_path)
    data = DeviceFolderData.from_folders(train, val, num_workers=0, train_transform=lambda image: image)
    assert gpu_loader_for(data, "train", device="cpu") is None
    assert isinstance(gpu_loader_for(data, "val", device="cpu"), DeviceLoader)
    skipping = DeviceFolderData.from_folders(train, val, num_workers=0, on_bad_image="skip")
    with pytest.raises(RuntimeError, match="on_bad_image='skip'"):
        gpu_loader_for(skipping, "val", device="cpu", enabled=True)


@pytest.mark.slow
def test_an_image_classifier_finetunes_through_the_wired_hook(tmp_path):
    train, val = image_folders(tmp_path, per_class=2)
    data = DeviceFolderData.from_folders(train, val, batch_size=2, num_workers=0, image_size=32)
    task = ImageClassifier(num_classes=data.num_classes, pretrained=False)
    trainer = flash.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.finetune(task, data, strategy="freeze")
    assert trainer.global_step == 2 and "val_accuracy" in trainer.callback_metrics
