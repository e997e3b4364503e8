"""Cross-validation on image files: grouped duplicates stay in one fold, each fold caches its own features."""

from __future__ import annotations

import copy
import shutil

import numpy as np
from image_fixtures import image_files, make_class_folders

import flash
from flash.image import ImageClassificationData, ImageClassifier
from flash.image.features import SharedFeatures

QUIET = {"enable_progress_bar": False, "max_epochs": 1, "num_sanity_val_steps": 0}


def test_duplicated_images_in_one_group_never_sit_on_both_sides(tmp_path):
    root = make_class_folders(tmp_path / "imgs", per_class=4, splits=("train",))
    files = image_files(root / "train")
    for path in files[:3]:  # the same photo saved twice, as happens in scraped data sets
        shutil.copy(path, path.replace(".jpg", "_copy.jpg"))
    files = image_files(root / "train")
    labels = [path.split("/")[-2] for path in files]
    groups = [path.split("/")[-1].replace("_copy", "") + label for path, label in zip(files, labels)]
    data = ImageClassificationData.from_files(files, labels, batch_size=4, image_size=32)
    trainer = flash.Trainer(default_root_dir=tmp_path, **QUIET)
    result = trainer.cross_validate(
        ImageClassifier(num_classes=2), data, folds=2, groups=groups, strategy="freeze", verbose=False
    )
    fold_of = result.fold_of[0]
    for i, group in enumerate(groups):
        twins = [j for j, other in enumerate(groups) if other == group]
        assert len({int(fold_of[j]) for j in twins}) == 1, f"{files[i]} was split from its copy"
    assert result.outputs.shape == (1, len(files), 2)
    assert np.isfinite(result.outputs).all()


def test_each_fold_has_its_own_frozen_feature_cache(tmp_path):
    root = make_class_folders(tmp_path / "imgs", per_class=4)
    data = ImageClassificationData.from_folders(root / "train", root / "val", batch_size=4, image_size=32)
    first, second = data.fold([0, 1, 2, 3, 4, 5], [6, 7]), data.fold([2, 3, 4, 5, 6, 7], [0, 1])
    assert first.frozen_features is not second.frozen_features is not data.frozen_features
    assert first.frozen_features.data is first and first.cache is data.cache  # decoded images are shared
    pooled = data.pooled_training()
    assert len(pooled) == 16 and first.splits["val"].inputs == [pooled.inputs[6], pooled.inputs[7]]
    assert data.splits["train"].inputs == pooled.inputs[:8]  # the original data is untouched


def test_a_frozen_backbone_sees_each_image_once_across_all_folds(tmp_path, monkeypatch):
    root = make_class_folders(tmp_path / "imgs", per_class=4)  # 8 train + 8 val images, pooled: 16
    data = ImageClassificationData.from_folders(root / "train", root / "val", batch_size=4, image_size=32)
    task = ImageClassifier(num_classes=2)
    twin = copy.deepcopy(task)
    seen = []
    task.backbone.register_forward_hook(lambda module, args, output: seen.append(len(args[0])))
    trainer = flash.Trainer(default_root_dir=tmp_path, **{**QUIET, "max_epochs": 2})
    result = trainer.cross_validate(task, data, folds=4, strategy="freeze", verbose=False)
    # The 16 images once each for all folds' training and held-out features (without sharing:
    # 12 + 4 per fold, 64); then each fold task's final evaluation and out-of-fold pass run the
    # whole network on its 4 held-out images (2 x 16).
    assert sum(seen) == 16 + 2 * 16, seen
    fresh = ImageClassificationData.from_folders(root / "train", root / "val", batch_size=4, image_size=32)
    monkeypatch.setattr(
        SharedFeatures, "get", lambda self, key, positions: None
    )  # every fold computes its own
    unshared = flash.Trainer(default_root_dir=tmp_path, **{**QUIET, "max_epochs": 2}).cross_validate(
        twin, fresh, folds=4, strategy="freeze", verbose=False
    )
    assert np.allclose(unshared.outputs, result.outputs, atol=1e-4)  # shared features are the same features
