"""Stages that start training mid-run warm their learning rate up instead of jumping to it."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
from image_fixtures import make_class_folders
from lightning.pytorch.callbacks import Callback

import flash
from flash.core.training.finetuning import FreezeUnfreeze
from flash.image import ImageClassificationData, ImageClassifier

TRAINER_ARGS = {"enable_progress_bar": False, "logger": False, "enable_checkpointing": False,
                "enable_model_summary": False, "num_sanity_val_steps": 0}  # fmt: skip


class StepRates(Callback):
    """The learning rate each trainable group has at every optimizer step, as the optimizer uses it."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.steps.append(
            {
                group["name"]: group["lr"]
                for group in optimizer.param_groups
                if any(p.requires_grad for p in group["params"])
            }
        )


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_class_folders(tmp_path_factory.mktemp("warmup"), per_class=6)  # 12 train images


def _run(folders, **task_args) -> list[dict[str, float]]:
    pl.seed_everything(0)
    data = ImageClassificationData.from_folders(
        train_folder=folders / "train", val_folder=folders / "val", batch_size=4, image_size=32
    )  # 3 training batches an epoch
    task = ImageClassifier(num_classes=2, lr_scheduler=None, learning_rate=1e-3, **task_args)
    rates = StepRates()
    trainer = flash.Trainer(max_epochs=3, callbacks=[rates], **TRAINER_ARGS)
    trainer.finetune(task, data, strategy=FreezeUnfreeze(unfreeze_epoch=1))
    return rates.steps


def test_unfrozen_stages_warm_up_over_one_epoch(folders):
    steps = _run(folders)
    assert len(steps) == 9
    assert all(set(step) == {"head"} for step in steps[:3])  # frozen epoch: only the head trains
    assert all(step["head"] == pytest.approx(1e-3) for step in steps)
    backbone = [name for name in steps[3] if name.startswith("backbone")]
    assert backbone, "no backbone group trained after unfreezing"
    for name in backbone:
        seen = [step[name] for step in steps[3:]]
        assert seen == pytest.approx([1e-4 / 3, 2e-4 / 3, 1e-4, 1e-4, 1e-4, 1e-4])


def test_warmup_can_be_turned_off(folders):
    steps = _run(folders, unfreeze_warmup=False)
    for step in steps[3:]:
        assert all(lr == pytest.approx(1e-4) for name, lr in step.items() if name.startswith("backbone"))
