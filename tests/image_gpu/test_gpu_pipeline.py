"""The device image path, run with device="cpu": the same decode, crop, resize and normalise as on CUDA."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from gpu_test_images import image_folder, smooth_rgb, write_image
from PIL import Image, ImageOps
from torch import nn
from torchvision import transforms as T

import flash
from flash.core.data.datamodule import EpochShuffleSampler
from flash.core.model.classification import ClassificationTask
from flash.image.gpu_pipeline import (
    CudaSpeedups,
    DeviceImageTransform,
    EncodedBatch,
    EncodedImageDataset,
    collate_encoded,
    device_image_loader,
    gpu_decoding_available,
    input_dtype_for_precision,
    item_uniforms,
    probe_image,
    random_resized_crop_boxes,
)
from flash.image.io import BadImageError
from flash.image.transforms import ImageCollate, ImagePipeline

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def batch_of(paths, targets=None, indices=None) -> EncodedBatch:
    dataset = EncodedImageDataset(paths, targets)
    indices = range(len(paths)) if indices is None else indices
    return collate_encoded([dataset[i] for i in indices])


def cpu_path_eval(paths, transform: DeviceImageTransform) -> torch.Tensor:
    """What flash's CPU input path makes of ``paths`` for evaluation."""
    preprocessing = {
        "image_size": transform.image_size[0],
        "mean": transform.mean,
        "std": transform.std,
        "crop_pct": transform.crop_pct,
        "interpolation": transform.interpolation,
    }
    pipeline = ImagePipeline(preprocessing, train=False)
    crops = torch.stack([pipeline(pipeline.load(str(p))) for p in paths])
    return ImageCollate(transform.mean, transform.std, channels_last=False).normalize(crops)


def pixel_levels(difference: torch.Tensor, std=STD) -> torch.Tensor:
    return difference.abs() * torch.tensor(std).view(1, 3, 1, 1) * 255


# -- evaluation transform against a PIL reference ---------------------------------------------------
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_evaluation_matches_pil_resize_and_centre_crop(tmp_path, interpolation):
    paths, targets = image_folder(tmp_path, count=5, size=(90, 120))
    transform = DeviceImageTransform(
        (40, 48), MEAN, STD, train=False, device="cpu", crop_pct=0.8, interpolation=interpolation
    )
    out = transform(batch_of(paths, targets))
    mode = T.InterpolationMode.BILINEAR if interpolation == "bilinear" else T.InterpolationMode.BICUBIC
    reference = T.Compose(
        [T.Resize(transform.resize_size, mode), T.CenterCrop((40, 48)), T.ToTensor(), T.Normalize(MEAN, STD)]
    )
    expected = torch.stack([reference(Image.open(p).convert("RGB")) for p in paths])
    difference = pixel_levels(out["input"] - expected)
    assert out["input"].shape == (5, 3, 40, 48)
    assert difference.mean() < 1.0  # rounding of the resized size differs from torchvision's by a pixel
    assert torch.equal(out["target"], torch.as_tensor(targets))
    assert out["index"].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("crop_pct", [0.875, 0.9])
def test_evaluation_matches_the_cpu_input_path(tmp_path, crop_pct):
    paths, targets = image_folder(tmp_path, count=4, size=(90, 120))
    transform = DeviceImageTransform(48, MEAN, STD, train=False, device="cpu", crop_pct=crop_pct)
    difference = pixel_levels(transform(batch_of(paths, targets))["input"] - cpu_path_eval(paths, transform))
    # the CPU path decodes large JPEGs at a reduced DCT scale (PIL's draft): close, not identical
    assert difference.mean() < 2.0 and torch.quantile(difference.flatten(), 0.95) < 5.0


def test_output_dtype_and_memory_format(tmp_path):
    paths, targets = image_folder(tmp_path, count=3)
    batch = batch_of(paths, targets)
    plain = DeviceImageTransform(32, train=False, device="cpu")(batch)["input"]
    assert plain.dtype == torch.float32 and plain.is_contiguous()
    fast = DeviceImageTransform(32, train=False, device="cpu", dtype=torch.bfloat16, channels_last=True)(
        batch
    )
    x = fast["input"]
    assert x.dtype == torch.bfloat16 and x.shape == (3, 3, 32, 32)
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert torch.allclose(x.float(), plain, atol=0.05)


# -- training augmentation ----------------------------------------------------------------------------
def test_training_crops_and_flips_are_the_sampled_boxes(tmp_path):
    """Each training image is its box, cropped, resized (antialiased, as PIL) and maybe flipped."""
    paths, targets = image_folder(tmp_path, count=8, size=(80, 100))
    transform = DeviceImageTransform(32, MEAN, STD, train=True, device="cpu", seed=7)
    batch = batch_of(paths, targets)
    out = transform(batch, epoch=4)["input"]
    sizes = np.array([Image.open(p).size[::-1] for p in paths])
    boxes, flips = transform.crop_parameters(sizes, batch.indices.numpy(), epoch=4)
    assert 0 < flips.sum() < len(flips)  # both cases are exercised
    for i, path in enumerate(paths):
        top, left, height, width = boxes[i].tolist()
        image = Image.open(path).convert("RGB").crop((left, top, left + width, top + height))
        image = image.resize((32, 32), Image.BILINEAR)
        if flips[i]:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        expected = T.Normalize(MEAN, STD)(T.ToTensor()(image))
        assert (out[i] - expected).abs().mean() < 0.03, f"image {i}"


def test_augmentation_is_a_function_of_seed_epoch_and_item(tmp_path):
    paths, targets = image_folder(tmp_path, count=6)
    transform = DeviceImageTransform(24, train=True, device="cpu", seed=3)
    whole = transform(batch_of(paths, targets), epoch=1)["input"]
    again = DeviceImageTransform(24, train=True, device="cpu", seed=3)(batch_of(paths, targets), epoch=1)[
        "input"
    ]
    assert torch.equal(whole, again)
    # the same items in other batches, in another order, give the same pixels
    part = transform(batch_of(paths, targets, indices=[5, 2]), epoch=1)["input"]
    assert torch.equal(part[0], whole[5]) and torch.equal(part[1], whole[2])
    assert not torch.equal(transform(batch_of(paths, targets), epoch=2)["input"], whole)
    other_seed = DeviceImageTransform(24, train=True, device="cpu", seed=4)
    assert not torch.equal(other_seed(batch_of(paths, targets), epoch=1)["input"], whole)


def test_item_uniforms_are_uniform_and_keyed():
    draws = item_uniforms(0, 0, np.arange(2000), 5)
    assert draws.shape == (2000, 5) and draws.min() >= 0 and draws.max() < 1
    assert abs(draws.mean() - 0.5) < 0.01 and abs(draws.std() - (1 / 12) ** 0.5) < 0.01
    assert np.array_equal(item_uniforms(0, 0, np.array([7, 3]), 5), draws[[7, 3]])
    assert not np.array_equal(item_uniforms(0, 1, np.arange(10), 5), draws[:10])


def test_crop_boxes_follow_random_resized_crop():
    rng = np.random.default_rng(0)
    sizes = rng.integers(200, 400, size=(500, 2))  # shapes where some attempt fits
    boxes = random_resized_crop_boxes(sizes, rng.random((500, 40)), scale=(0.2, 0.9), ratio=(0.75, 1.25))
    top, left, height, width = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + height <= sizes[:, 0]).all() and (left + width <= sizes[:, 1]).all()
    area = height * width / (sizes[:, 0] * sizes[:, 1])
    assert area.min() > 0.15 and area.max() < 0.95  # the scale range, up to rounding
    aspect = width / height
    assert aspect.min() > 0.6 and aspect.max() < 1.5


def test_impossible_crops_fall_back_to_torchvision_centre_crop():
    for height, width in [(2, 1000), (1000, 2)]:
        boxes = random_resized_crop_boxes(np.array([[height, width]]), np.full((1, 40), 0.5))
        expected = T.RandomResizedCrop.get_params(torch.empty(3, height, width), [0.08, 1.0], [3 / 4, 4 / 3])
        assert tuple(boxes[0].tolist()) == expected


# -- files the device does not decode, and broken files ------------------------------------------
@pytest.mark.parametrize(
    ("name", "mode", "on_device"),
    [
        ("rgb.jpg", "RGB", True),
        ("gray.jpg", "L", True),
        ("cmyk.jpg", "CMYK", False),
        ("rgb.png", "RGB", False),
        ("alpha.png", "RGBA", False),
        ("palette.gif", "P", False),
    ],
)
def test_every_kind_of_file_decodes_like_pil(tmp_path, name, mode, on_device):
    path = write_image(tmp_path / name, 50, 70, mode=mode)
    assert (probe_image(path.read_bytes(), str(path)) == 1) is on_device
    transform = DeviceImageTransform(32, MEAN, STD, train=False, device="cpu")
    batch = batch_of([path, write_image(tmp_path / "plain.jpg")], [0, 1])
    assert (0 in batch.device_positions) is on_device
    out = transform(batch)["input"]
    assert out.shape == (2, 3, 32, 32)
    assert pixel_levels(out[:1] - cpu_path_eval([path], transform)).mean() < 1.5


def test_transparent_pixels_become_white_as_on_the_cpu_path(tmp_path):
    rgba = np.zeros((30, 40, 4), dtype=np.uint8)
    rgba[:, :20] = (255, 0, 0, 255)  # left half opaque red, right half fully transparent
    path = tmp_path / "logo.png"
    Image.fromarray(rgba, "RGBA").save(path)
    transform = DeviceImageTransform(16, (0.0,) * 3, (1.0,) * 3, train=False, device="cpu", crop_pct=1.0)
    pixels = transform(batch_of([path]))["input"][0]
    assert torch.allclose(pixels[:, 8, -2], torch.ones(3), atol=0.02)  # white, not black


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_the_cpu_path(tmp_path, orientation):
    image = Image.fromarray(smooth_rgb(40, 64))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rotated{orientation}.jpg"
    image.save(path, "JPEG", quality=95, exif=exif)
    assert probe_image(path.read_bytes(), str(path)) == orientation
    transform = DeviceImageTransform((24, 40), MEAN, STD, train=False, device="cpu", crop_pct=1.0)
    out = transform(batch_of([path]))["input"]
    upright = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    resize = T.Resize(transform.resize_size)
    expected = T.Compose([resize, T.CenterCrop((24, 40)), T.ToTensor(), T.Normalize(MEAN, STD)])(upright)
    assert pixel_levels(out - expected[None]).mean() < 1.5


def test_a_truncated_jpeg_is_named(tmp_path):
    good = write_image(tmp_path / "good.jpg", 60, 60)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good.read_bytes()[:300])
    transform = DeviceImageTransform(32, train=False, device="cpu")
    with pytest.raises(BadImageError, match=r"broken\.jpg"):
        transform(batch_of([good, broken]))


def test_a_file_that_is_no_image_is_named_by_the_loader_workers(tmp_path):
    paths, targets = image_folder(tmp_path, count=3)
    (tmp_path / "notes.jpg").write_text("not a picture")
    transform = DeviceImageTransform(32, train=False, device="cpu")
    loader = device_image_loader(
        [*paths, tmp_path / "notes.jpg"], [*targets, 0], transform, batch_size=2, num_workers=1
    )
    # a worker's error comes back as the DataLoader rebuilds it; it names the file either way
    with pytest.raises((ValueError, RuntimeError), match=r"notes\.jpg"):
        list(loader)
    with pytest.raises(BadImageError, match=r"notes\.jpg: not an image file"):
        EncodedImageDataset([tmp_path / "notes.jpg"])[0]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(BadImageError, match=r"gone\.jpg"):
        EncodedImageDataset([tmp_path / "gone.jpg"])[0]


# -- loader, Lightning, and the helpers the image task uses ---------------------------------------------
def test_loader_shuffles_per_epoch_and_keeps_targets(tmp_path):
    paths, _ = image_folder(tmp_path, count=6)
    targets = np.arange(6)
    transform = DeviceImageTransform(16, train=True, device="cpu", seed=1)
    sampler = EpochShuffleSampler(6, seed=1)
    loader = device_image_loader(paths, targets, transform, batch_size=4, num_workers=0, sampler=sampler)
    first = [b["target"] for b in loader]
    assert [len(t) for t in first] == [4, 2] and sorted(torch.cat(first).tolist()) == list(range(6))
    loader.set_epoch(1)
    second = torch.cat([b["target"] for b in loader]).tolist()
    assert second != torch.cat(first).tolist()


def test_background_stages_give_the_same_batches_as_inline(tmp_path):
    paths, targets = image_folder(tmp_path, count=7)

    def batches(background):
        transform = DeviceImageTransform(16, train=True, device="cpu", seed=5)
        sampler = EpochShuffleSampler(7, seed=5)
        loader = device_image_loader(
            paths, targets, transform, batch_size=3, num_workers=0, sampler=sampler, background=background
        )
        loader.set_epoch(2)
        return list(loader)

    inline, threaded = batches(False), batches(True)
    assert len(inline) == len(threaded) == 3
    for a, b in zip(inline, threaded):
        assert torch.equal(a["input"], b["input"]) and torch.equal(a["target"], b["target"])


def test_prediction_batches_have_no_target_and_multi_label_targets_stack(tmp_path):
    paths, _ = image_folder(tmp_path, count=3)
    transform = DeviceImageTransform(16, train=False, device="cpu")
    assert set(transform(batch_of(paths))) == {"index", "input"}
    multi_hot = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=np.float32)
    assert transform(batch_of(paths, multi_hot))["target"].shape == (3, 3)


class TinyCnn(ClassificationTask):
    def __init__(self) -> None:
        backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        super().__init__(backbone, nn.Linear(8, 2), num_classes=2, labels=["a", "b"])


def test_a_lightning_task_trains_and_validates_through_the_pipeline(tmp_path):
    paths, targets = image_folder(tmp_path, count=8)
    train = device_image_loader(
        paths,
        targets,
        DeviceImageTransform(32, train=True, device="cpu", seed=0),
        batch_size=4,
        num_workers=0,
        sampler=EpochShuffleSampler(8, seed=0),
        background=True,
    )
    val = device_image_loader(
        paths, targets, DeviceImageTransform(32, train=False, device="cpu"), batch_size=4
    )
    trainer = flash.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(TinyCnn(), train_dataloaders=train, val_dataloaders=val)
    assert trainer.global_step == 4
    assert "val_accuracy" in trainer.callback_metrics


def test_cuda_speedups_leave_a_cpu_model_alone_and_convert_a_cuda_one(monkeypatch):
    compiled = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kwargs: compiled.append((self, kwargs)))
    task = TinyCnn()
    speedups = CudaSpeedups(channels_last=True, compile=True, compile_kwargs={"mode": "max-autotune"})
    speedups.on_fit_start(None, task)
    assert task.backbone[0].weight.is_contiguous() and compiled == []
    monkeypatch.setattr(type(task), "device", property(lambda self: torch.device("cuda")))
    speedups.on_fit_start(None, task)
    speedups.on_validation_start(None, task)
    assert task.backbone[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert compiled == [(task.backbone, {"mode": "max-autotune"})]  # in place, once: checkpoint keys stay


def test_precision_to_input_dtype():
    assert input_dtype_for_precision("bf16-mixed") is torch.bfloat16
    assert input_dtype_for_precision("bf16-true") is torch.bfloat16
    assert input_dtype_for_precision("16-true") is torch.float16
    assert input_dtype_for_precision("16-mixed") is torch.float32
    assert input_dtype_for_precision("32-true") is torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without CUDA")
def test_no_gpu_decoding_without_cuda():
    assert gpu_decoding_available() is False


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        DeviceImageTransform(0, train=True)
    with pytest.raises(ValueError, match="0-1 scale"):
        DeviceImageTransform(32, mean=(123.7, 116.3, 103.5), train=True)
    with pytest.raises(ValueError, match="std must be positive"):
        DeviceImageTransform(32, std=(0.2, 0.0, 0.2), train=True)
    with pytest.raises(ValueError, match="scale"):
        DeviceImageTransform(32, scale=(0.9, 0.1), train=True)
    with pytest.raises(ValueError, match="interpolation"):
        DeviceImageTransform(32, interpolation="nearest-ish", train=True)
    with pytest.raises(ValueError, match="dtype"):
        DeviceImageTransform(32, dtype=torch.int64, train=True)
    with pytest.raises(TypeError, match="CPU input path"):
        EncodedImageDataset([np.zeros((4, 4, 3))])
    with pytest.raises(ValueError, match="one per file"):
        EncodedImageDataset(["a.jpg", "b.jpg"], [0])
    with pytest.raises(ValueError, match="batch_size"):
        device_image_loader(["a.jpg"], None, DeviceImageTransform(8, train=False, device="cpu"), batch_size=0)
    with pytest.raises(TypeError, match="EncodedBatch"):
        DeviceImageTransform(8, train=False, device="cpu")({"input": torch.zeros(1)})


def test_collate_packs_bytes_back_to_back(tmp_path):
    paths, _ = image_folder(tmp_path, count=2)
    png = write_image(tmp_path / "x.png")
    batch = batch_of([paths[0], png, paths[1]], [0, 1, 0])
    assert batch.device_positions == [0, 2] and batch.decoded_positions == [1]
    first = batch.data[batch.offsets[0] : batch.offsets[1]].numpy().tobytes()
    assert first == paths[0].read_bytes()
    assert Image.open(io.BytesIO(first)).format == "JPEG"
    assert batch.decoded[0].shape == (3, 48, 64) and batch.decoded[0].dtype == torch.uint8
