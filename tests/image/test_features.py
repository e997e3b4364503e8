"""Frozen features: computed once while the backbone cannot change, never reused once it can."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from image_fixtures import make_class_folders
from lightning.pytorch.callbacks import Callback
from sklearn.linear_model import LogisticRegression

import flash
from flash.core.training.finetuning import FreezeUnfreeze
from flash.image import ImageClassificationData, ImageClassifier
from flash.image.features import fit_linear_probe

TRAINER_ARGS = {"enable_progress_bar": False, "logger": False, "enable_checkpointing": False,
                "enable_model_summary": False, "num_sanity_val_steps": 0}  # fmt: skip


class BackboneCalls(Callback):
    """Images through the backbone, per epoch and phase (train steps and feature fills / validation)."""

    def __init__(self) -> None:
        self.train: dict[int, int] = {}
        self.val: dict[int, int] = {}
        self._phase = "train"

    def on_fit_start(self, trainer, pl_module) -> None:
        def count(module, args, output):
            table = self.train if self._phase == "train" else self.val
            table[trainer.current_epoch] = table.get(trainer.current_epoch, 0) + len(args[0])

        pl_module.backbone.register_forward_hook(count)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._phase = "train"

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._phase = "val"

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._phase = "train"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_class_folders(tmp_path_factory.mktemp("feat"), per_class=5)  # 10 train, 10 val images


def _data(root):
    return ImageClassificationData.from_folders(root / "train", root / "val", batch_size=4, image_size=32)


def test_frozen_features_are_computed_once_and_recomputed_after_unfreezing(folders):
    pl.seed_everything(0)
    task, data, calls = ImageClassifier(num_classes=2), _data(folders), BackboneCalls()
    flash.Trainer(max_epochs=4, callbacks=[calls], **TRAINER_ARGS).finetune(
        task, data, strategy=FreezeUnfreeze(unfreeze_epoch=2)
    )
    assert calls.train == {0: 10, 2: 10, 3: 10}, "one pass over the training images while frozen"
    assert calls.val == {0: 10, 2: 10, 3: 10}, "validation features reused while the backbone is fixed"
    assert data.dataset("train").pixels and data.dataset("val").pixels


def test_training_batchnorm_means_no_cache(folders):
    pl.seed_everything(0)
    task, calls = ImageClassifier(num_classes=2), BackboneCalls()
    flash.Trainer(max_epochs=2, callbacks=[calls], **TRAINER_ARGS).finetune(
        task, _data(folders), strategy="freeze", train_bn=True
    )
    assert calls.train == {0: 10, 1: 10} and calls.val == {0: 10, 1: 10}


def test_cache_features_off(folders):
    pl.seed_everything(0)
    task, calls = ImageClassifier(num_classes=2, cache_features=False), BackboneCalls()
    flash.Trainer(max_epochs=2, callbacks=[calls], **TRAINER_ARGS).finetune(
        task, _data(folders), strategy="freeze"
    )
    assert calls.train == {0: 10, 1: 10}


def test_cached_features_are_the_backbone_of_the_evaluation_crops(folders):
    class Snapshot(Callback):  # the cache is freed when fit ends
        def on_train_end(self, trainer, pl_module) -> None:
            dataset = trainer.datamodule.dataset("train")
            cache = trainer.datamodule.frozen_features.cache
            self.cached = cache.get("train", dataset.token, torch.arange(len(dataset)))

    pl.seed_everything(0)
    task, data, snapshot = ImageClassifier(num_classes=2, linear_probe=False), _data(folders), Snapshot()
    flash.Trainer(max_epochs=1, callbacks=[snapshot], **TRAINER_ARGS).finetune(task, data, strategy="freeze")
    cached = snapshot.cached
    assert cached is not None
    task.eval()
    with torch.no_grad():
        expected = torch.cat([task.backbone(b["input"]) for b in data.eval_loader("train")])
    assert torch.allclose(cached, expected, atol=1e-5)


def test_linear_probe_matches_scikit_learn():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    y = rng.integers(0, 3, 120)
    x = (centres[y] + rng.normal(scale=1.5, size=(120, 16))).astype(np.float32)
    linear = torch.nn.Linear(16, 3)
    fit_linear_probe(linear, torch.from_numpy(x), torch.from_numpy(y))
    reference = LogisticRegression(C=1.0, max_iter=5000, tol=1e-8).fit(x, y)
    with torch.no_grad():
        ours = torch.softmax(linear(torch.from_numpy(x)), -1).numpy()
    assert np.abs(ours - reference.predict_proba(x)).max() < 2e-3
    multi = (rng.random((120, 3)) < 0.3).astype(np.float32)
    linear = torch.nn.Linear(16, 3)
    fit_linear_probe(linear, torch.from_numpy(x), torch.from_numpy(multi), multi_label=True)
    for k in range(3):
        one = LogisticRegression(C=1.0, max_iter=5000, tol=1e-8).fit(x, multi[:, k])
        with torch.no_grad():
            ours = torch.sigmoid(linear(torch.from_numpy(x))[:, k]).numpy()
        assert np.abs(ours - one.predict_proba(x)[:, 1]).max() < 2e-3


def test_the_frozen_phase_starts_with_a_linear_probe(folders):
    pl.seed_everything(0)
    task, data = ImageClassifier(num_classes=2), _data(folders)
    flash.Trainer(max_epochs=1, **TRAINER_ARGS).finetune(task, data, strategy="freeze")
    assert task.trainer.history[0]["val_accuracy"] == 1.0  # red vs blue is linearly separable


@pytest.mark.slow
def test_resume_in_the_frozen_phase_matches_the_uninterrupted_run(folders, tmp_path):
    def run(directory, stop_after=None, ckpt_path=None):
        pl.seed_everything(3)
        task = ImageClassifier(num_classes=2)

        class Stop(Callback):
            def on_train_epoch_end(self, trainer, pl_module) -> None:
                if stop_after is not None and trainer.current_epoch == stop_after:
                    trainer.should_stop = True

        checkpoints = pl.callbacks.ModelCheckpoint(dirpath=directory, save_last=True, save_top_k=-1)
        trainer = flash.Trainer(max_epochs=3, callbacks=[checkpoints, Stop()], enable_progress_bar=False,
                                logger=False, deterministic=True, default_root_dir=directory)  # fmt: skip
        trainer.finetune(task, _data(folders), strategy=FreezeUnfreeze(unfreeze_epoch=2), ckpt_path=ckpt_path)
        return task.state_dict()

    full = run(tmp_path / "full")
    run(tmp_path / "part", stop_after=0)
    resumed = run(tmp_path / "resumed", ckpt_path=str(tmp_path / "part" / "last.ckpt"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_no_freeze_trains_the_convolutions_around_the_pretrained_batchnorm(folders):
    pl.seed_everything(0)
    task, data = ImageClassifier(num_classes=2), _data(folders)
    before = {k: v.clone() for k, v in task.backbone.state_dict().items()}
    flash.Trainer(max_epochs=1, **TRAINER_ARGS).finetune(task, data, strategy="no_freeze")
    after = task.backbone.state_dict()
    norms = {f"{name}.{key}" for name, m in task.backbone.named_modules()
             if isinstance(m, torch.nn.BatchNorm2d) for key in m.state_dict()}  # fmt: skip
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert norms and not moved & norms, "BatchNorm statistics and weights stay as pretrained"
    assert {k for k, p in task.backbone.named_parameters() if p.ndim == 4} <= moved, (
        "every convolution trains"
    )
