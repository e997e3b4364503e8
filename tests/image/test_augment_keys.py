"""Training augmentation depends on (seed, epoch, item index) only: not on worker count or process."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from image_fixtures import make_class_folders
from torchvision.transforms import v2

import flash
from flash.core.data.datamodule import EpochShuffleSampler
from flash.core.data.randomness import SampleIndex
from flash.image import ImageClassificationData, ImageClassifier
from flash.image.gpu_pipeline import DeviceImageTransform
from flash.image.transforms import ImagePipeline

PREPROCESSING = {"image_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3}


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (24, 30, 3), dtype=np.uint8)


def test_sampler_yields_indices_that_carry_seed_and_epoch():
    sampler = EpochShuffleSampler(6, seed=3)
    sampler.set_epoch(2)
    items = list(sampler)
    assert sorted(items) == list(range(6))
    assert all(isinstance(i, SampleIndex) and (i.seed, i.epoch) == (3, 2) for i in items)
    import pickle

    again = pickle.loads(pickle.dumps(items[0]))  # what a worker receives
    assert (int(again), again.seed, again.epoch) == (int(items[0]), 3, 2)


def test_crop_is_a_function_of_seed_epoch_and_index():
    pipeline = ImagePipeline(PREPROCESSING, train=True)
    array = _image()
    first = pipeline(array, SampleIndex(5, 1, 0))
    torch.manual_seed(123)  # the global state plays no part
    assert torch.equal(pipeline(array, SampleIndex(5, 1, 0)), first)
    others = [pipeline(array, SampleIndex(5, 1, e)) for e in range(1, 6)]
    assert not all(torch.equal(first, o) for o in others), "a new epoch draws new crops"
    assert first.shape == (3, 16, 16) and first.dtype == torch.uint8


def test_cpu_crops_are_the_gpu_paths_crops():
    """Both paths draw the same boxes and flips for an item."""
    pipeline = ImagePipeline(PREPROCESSING, train=True, crop_scale=(0.3, 1.0))
    device = DeviceImageTransform(16, train=True, device="cpu", seed=7, scale=(0.3, 1.0))
    array = _image(1)
    for index in range(20):
        boxes, flips = device.crop_parameters(np.array([array.shape[:2]]), np.array([index]), epoch=4)
        top, left, height, width = boxes[0].tolist()
        expected = v2.functional.resized_crop(
            torch.from_numpy(array).permute(2, 0, 1), top, left, height, width, [16, 16], antialias=True
        )
        if flips[0]:
            expected = expected.flip(-1)
        assert torch.equal(pipeline(array, SampleIndex(index, 7, 4)), expected)


def test_user_transform_draws_are_keyed_too():
    transform = v2.Compose(
        [v2.PILToTensor(), v2.RandomResizedCrop(12, antialias=True), v2.RandomHorizontalFlip()]
    )
    pipeline = ImagePipeline(PREPROCESSING, train=True, transform=transform)
    array = _image(2)
    state = torch.get_rng_state()
    first = pipeline(array, SampleIndex(3, 0, 1))
    assert torch.equal(torch.get_rng_state(), state), "the global state is left as it was"
    torch.manual_seed(99)
    assert torch.equal(pipeline(array, SampleIndex(3, 0, 1)), first)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_class_folders(tmp_path_factory.mktemp("workers"), per_class=4)


def _train(root, num_workers: int) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    pl.seed_everything(0)
    data = ImageClassificationData.from_folders(
        root / "train", root / "val", batch_size=4, image_size=32, num_workers=num_workers
    )
    task = ImageClassifier(num_classes=2)
    trainer = flash.Trainer(
        max_epochs=2,
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.finetune(task, data, "no_freeze")
    return {k: v.clone() for k, v in task.state_dict().items()}, trainer.history


def test_worker_count_does_not_change_the_result(folders):
    weights_0, history_0 = _train(folders, num_workers=0)
    weights_2, history_2 = _train(folders, num_workers=2)
    assert history_0 == history_2
    assert weights_0.keys() == weights_2.keys()
    assert all(torch.equal(weights_0[k], weights_2[k]) for k in weights_0)
