"""SemanticSegmentationData: constructors, classes, joint transforms, and bad input caught before training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from segmentation_fixtures import arrays, pair, write_dataset, write_split

from flash.image import SemanticSegmentationData
from flash.image.segmentation import colour_mask_to_indices
from flash.image.segmentation.data import SegmentationPipeline


def test_from_folders_pairs_by_stem_and_reads_classes_txt(tmp_path):
    root = write_dataset(tmp_path)
    data = SemanticSegmentationData.from_folders(
        train_folder=root / "train/images",
        train_target_folder=root / "train/masks",
        val_folder=root / "val/images",
        val_target_folder=root / "val/masks",
        batch_size=4,
    )
    assert data.num_classes == 2 and data.labels == ["background", "red"]
    assert len(data.splits["train"]) == 8 and len(data.splits["val"]) == 4
    for image, mask in zip(data.splits["train"].inputs, data.splits["train"].targets):
        assert image.endswith(".jpg") and mask.endswith(".png")
        assert image.split("/")[-1][:-4] == mask.split("/")[-1][:-4]


def test_labels_map_val_split_and_numbered_classes(tmp_path):
    root = write_dataset(tmp_path, classes=False)
    folders = {"train_folder": root / "train/images", "train_target_folder": root / "train/masks"}
    data = SemanticSegmentationData.from_folders(**folders, val_split=0.25)
    assert data.num_classes == 2 and data.labels is None
    assert len(data.splits["train"]) == 6 and len(data.splits["val"]) == 2
    data = SemanticSegmentationData.from_folders(**folders, labels_map={0: "sea", 1: "boat", 2: "sky"})
    assert data.num_classes == 3 and data.labels == ["sea", "boat", "sky"]


def test_from_numpy_tensors_and_files(tmp_path):
    images, masks = arrays(6)
    data = SemanticSegmentationData.from_numpy(images, masks, val_split=0.5, num_classes=2)
    assert data.num_classes == 2 and len(data.splits["val"]) == 3
    data = SemanticSegmentationData.from_tensors(
        torch.from_numpy(images).permute(0, 3, 1, 2),
        torch.from_numpy(masks),
        predict_data=torch.zeros(2, 3, 20, 30),
    )
    assert data.num_classes == 2 and len(data.splits["predict"]) == 2
    image_folder, mask_folder = write_split(tmp_path, "train", 4)
    data = SemanticSegmentationData.from_files(
        sorted(map(str, image_folder.iterdir())), sorted(map(str, mask_folder.iterdir())), num_classes=2
    )
    assert len(data.splits["train"]) == 4


def test_joint_transforms_keep_image_and_mask_aligned():
    image, mask = pair(3)
    image[mask == 255] = 0
    pipeline = SegmentationPipeline(32, train=True, ignore_index=255, scale_range=(0.6, 1.6), hflip=0.5)
    loaded, target, original = pipeline.load(image, mask, "item")
    assert original == (48, 64) and loaded.shape == (3, 32, 43) and target.shape == (32, 43)
    torch.manual_seed(0)
    for _ in range(20):
        crop, crop_mask = pipeline(loaded, target)
        assert crop.shape == (3, 32, 32) and crop_mask.shape == (32, 32)
        red = crop[0].int() - crop[2].int()
        labelled = crop_mask != 255
        # red pixels are class 1, blue ones class 0, wherever the crop, scale and flip put them
        agree = ((red > 0) == (crop_mask == 1))[labelled & (red.abs() > 120)]  # not blended edges
        assert agree.float().mean() > 0.99
        assert set(torch.unique(crop_mask).tolist()) <= {0, 1, 255}


def test_training_crops_are_padded_with_the_void_label():
    image, mask = pair(0)
    pipeline = SegmentationPipeline(32, train=True, ignore_index=7, scale_range=(0.5, 0.5), hflip=0.0)
    loaded, target, _ = pipeline.load(image, np.where(mask == 255, 7, mask), "item")
    _, crop_mask = pipeline(loaded, target)
    assert crop_mask.shape == (32, 32) and (crop_mask[16:] == 7).all()


def test_batches_hold_normalised_images_and_long_masks():
    images, masks = arrays(4)
    data = SemanticSegmentationData.from_numpy(
        images, masks, images[:2], masks[:2], batch_size=2, image_size=32
    )
    batch = next(iter(data.train_dataloader()))
    assert batch["input"].shape == (2, 3, 32, 32) and batch["input"].dtype == torch.float32
    assert batch["target"].shape == (2, 32, 32) and batch["target"].dtype == torch.long
    val = next(iter(data.val_dataloader()))
    assert val["input"].shape == (2, 3, 32, 43)


# -- bad input ------------------------------------------------------------------------------------
def test_a_mask_of_another_size_is_named(tmp_path):
    root = write_dataset(tmp_path)
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(root / "train/masks/002.png")
    with pytest.raises(ValueError, match=r"002.jpg: the image is 64x48 .* is 10x10"):
        SemanticSegmentationData.from_folders(root / "train/images", root / "train/masks")


def test_values_outside_the_classes_suggest_ignore_index(tmp_path):
    root = write_dataset(tmp_path, void=11)
    with pytest.raises(ValueError, match=r"value\(s\) 11, outside \[0, 2\).*pass ignore_index=11"):
        SemanticSegmentationData.from_folders(root / "train/images", root / "train/masks")
    data = SemanticSegmentationData.from_folders(root / "train/images", root / "train/masks", ignore_index=11)
    assert data.num_classes == 2 and data.ignore_index == 11


def test_numbered_classes_are_inferred_but_checked_against_num_classes():
    images, masks = arrays(4)
    masks[1, 10, 10] = 5
    assert SemanticSegmentationData.from_numpy(images, masks).num_classes == 6
    with pytest.raises(ValueError, match=r"value\(s\) 5, outside \[0, 2\)"):
        SemanticSegmentationData.from_numpy(images, masks, num_classes=2)


def test_images_without_masks_and_masks_without_images(tmp_path):
    root = write_dataset(tmp_path)
    (root / "train/masks/001.png").unlink()
    Image.fromarray(np.zeros((48, 64), dtype=np.uint8)).save(root / "train/masks/extra.png")
    with pytest.raises(
        ValueError,
        match=r"(?s)2 train file\(s\) without a partner.*001.jpg has no mask.*extra.png has no image",
    ):
        SemanticSegmentationData.from_folders(root / "train/images", root / "train/masks")


def test_rgb_masks_say_how_to_convert_them(tmp_path):
    root = write_dataset(tmp_path)
    colour = np.zeros((48, 64, 3), dtype=np.uint8)
    colour[:, 32:] = (128, 0, 0)
    Image.fromarray(colour).save(root / "train/masks/000.png")
    with pytest.raises(ValueError, match="colour \\(RGB\\) image.*colour_mask_to_indices"):
        SemanticSegmentationData.from_folders(root / "train/images", root / "train/masks")
    converted = colour_mask_to_indices(colour, [(0, 0, 0), (128, 0, 0)])
    assert converted.dtype == np.uint8 and set(np.unique(converted)) == {0, 1}
    Image.fromarray(converted).save(root / "train/masks/000.png")
    SemanticSegmentationData.from_folders(root / "train/images", root / "train/masks")
    grey_as_rgb = np.repeat(converted[..., None], 3, axis=-1)
    Image.fromarray(grey_as_rgb).save(root / "train/masks/000.png")  # grey saved as RGB is fine
    SemanticSegmentationData.from_folders(root / "train/images", root / "train/masks")


def test_empty_and_missing_folders(tmp_path):
    root = write_dataset(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="train_folder .*empty.* holds no images"):
        SemanticSegmentationData.from_folders(tmp_path / "empty", root / "train/masks")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SemanticSegmentationData.from_folders(tmp_path / "nope", root / "train/masks")
    with pytest.raises(ValueError, match="train_folder needs train_target_folder"):
        SemanticSegmentationData.from_folders(root / "train/images")


def test_bad_options_and_array_masks():
    images, masks = arrays(4)
    with pytest.raises(ValueError, match="4 train images but 3 train masks"):
        SemanticSegmentationData.from_numpy(images, masks[:3])
    with pytest.raises(ValueError, match="not whole numbers"):
        SemanticSegmentationData.from_numpy(images, masks.astype(np.float32) + 0.5)
    with pytest.raises(ValueError, match="ignore_index must be"):
        SemanticSegmentationData.from_numpy(images, masks, ignore_index=-1)
    with pytest.raises(ValueError, match="fewer than two classes"):
        SemanticSegmentationData.from_numpy(images, np.zeros_like(masks))
    with pytest.raises(ValueError, match="labels_map keys"):
        SemanticSegmentationData.from_numpy(images, masks, labels_map={1: "a", 2: "b"})
