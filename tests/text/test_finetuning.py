"""The finetuning promises on a real TextClassifier: a real backbone, a tiny run."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

import flash
from flash.core.training.finetuning import UnfreezeMilestones
from flash.text import TextClassificationData, TextClassifier
from text.conftest import QUIET, sentiment_frame


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, after: dict, prefix: str = "") -> set[str]:
    return {k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])}


class EpochSnapshots(Callback):
    def __init__(self) -> None:
        self.by_epoch: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.by_epoch[trainer.current_epoch] = snapshot(pl_module.backbone)


def tiny_run(strategy, epochs: int) -> tuple[TextClassifier, dict, dict, EpochSnapshots]:
    pl.seed_everything(0)
    data = TextClassificationData.from_data_frame(
        "sentence", "label", train_data_frame=sentiment_frame(), batch_size=4
    )
    task = TextClassifier(num_classes=2, max_length=12, learning_rate=1e-2, backbone_lr_factor=1.0)
    initial, initial_head = snapshot(task.backbone), snapshot(task.head)
    snaps = EpochSnapshots()
    trainer = flash.Trainer(max_epochs=epochs, callbacks=[snaps], enable_checkpointing=False, **QUIET)
    trainer.finetune(task, data, strategy=strategy)
    return task, initial, initial_head, snaps


def test_frozen_backbone_is_bit_identical_and_the_head_trains():
    task, initial, initial_head, _ = tiny_run("freeze", epochs=2)
    assert changed(initial, snapshot(task.backbone)) == set()
    assert changed(initial_head, snapshot(task.head)) == set(initial_head)


def test_unfreeze_milestones_unfreezes_the_top_layers_first():
    _, initial, _, snaps = tiny_run(UnfreezeMilestones(unfreeze_milestones=(1, 2), num_layers=2), epochs=3)
    embeddings, layers = "transformer.embeddings.", [f"transformer.encoder.layer.{i}." for i in range(6)]
    assert changed(initial, snaps.by_epoch[0]) == set(), "everything frozen before the first milestone"
    epoch1 = snaps.by_epoch[1]
    assert not changed(initial, epoch1, embeddings)
    assert [bool(changed(initial, epoch1, layer)) for layer in layers] == [False] * 4 + [True] * 2
    epoch2 = snaps.by_epoch[2]
    assert changed(snaps.by_epoch[1], epoch2, embeddings)
    assert all(changed(snaps.by_epoch[1], epoch2, layer) for layer in layers)
