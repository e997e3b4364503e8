"""The finetuning semantics that DESIGN.md promises, on a small model with BatchNorm."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

import flash
from flash.core.training.finetuning import FlashBaseFinetuning, FreezeUnfreeze, UnfreezeMilestones
from toy import ToyClassifier, toy_data

TRAINER_ARGS = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "logger": False,
    "enable_checkpointing": False,
}


def trainer(**kwargs) -> flash.Trainer:
    return flash.Trainer(**{**TRAINER_ARGS, **kwargs})


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, after: dict, keys=None) -> set[str]:
    keys = keys if keys is not None else before.keys()
    return {k for k in keys if not torch.equal(before[k], after[k])}


def is_bn_key(key: str, module: nn.Module) -> bool:
    owner = module.get_submodule(key.rsplit(".", 1)[0])
    return isinstance(owner, nn.BatchNorm1d)


class EpochSnapshots(Callback):
    def __init__(self) -> None:
        self.by_epoch: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.by_epoch[trainer.current_epoch] = snapshot(pl_module.backbone)


def test_default_trainer_runs_ten_epochs_not_a_thousand():
    assert flash.Trainer(logger=False).max_epochs == flash.core.training.trainer.DEFAULT_MAX_EPOCHS == 10
    assert flash.Trainer(logger=False, max_steps=5).max_steps == 5


@pytest.mark.parametrize("train_bn", [False, True])
def test_freeze_keeps_backbone_bit_identical(train_bn):
    pl.seed_everything(0)
    model, data = ToyClassifier(), toy_data()
    backbone0, head0 = snapshot(model.backbone), snapshot(model.head)
    trainer(max_epochs=2).finetune(model, data, strategy="freeze", train_bn=train_bn)
    backbone1 = snapshot(model.backbone)
    assert changed(head0, snapshot(model.head)) == set(head0)
    non_bn = [k for k in backbone0 if not is_bn_key(k, model.backbone)]
    bn = [k for k in backbone0 if is_bn_key(k, model.backbone) and "num_batches" not in k]
    assert changed(backbone0, backbone1, non_bn) == set()
    if train_bn:
        assert {k for k in changed(backbone0, backbone1, bn) if "running" in k}, (
            "BatchNorm should keep training"
        )
    else:
        assert changed(backbone0, backbone1) == set(), "train_bn=False must leave BatchNorm untouched too"


def test_no_freeze_trains_everything():
    pl.seed_everything(0)
    model, data = ToyClassifier(), toy_data()
    before = snapshot(model)
    trainer(max_epochs=1).finetune(model, data, strategy="no_freeze")
    after = snapshot(model)
    params = [k for k, _ in model.named_parameters()]
    assert changed(before, after, params) == set(params)


class PretrainedNormsToy(ToyClassifier):
    no_freeze_train_bn = False


@pytest.mark.parametrize(
    ("task_class", "train_bn", "bn_trains"),
    [
        (ToyClassifier, None, True),  # tasks without no_freeze_train_bn: BatchNorm trains
        (PretrainedNormsToy, None, False),  # the task's choice when train_bn is left at None
        (PretrainedNormsToy, True, True),  # an explicit train_bn wins
        (ToyClassifier, False, False),
    ],
)
def test_no_freeze_trains_batchnorm_as_train_bn_says(task_class, train_bn, bn_trains):
    pl.seed_everything(0)
    model, data = task_class(), toy_data()
    before = snapshot(model.backbone)
    trainer(max_epochs=1).finetune(model, data, strategy="no_freeze", train_bn=train_bn)
    moved = changed(before, snapshot(model.backbone))
    bn = {k for k in before if is_bn_key(k, model.backbone)}
    assert moved - bn == set(before) - bn, "every other backbone weight trains"
    if bn_trains:
        assert {k for k in moved & bn if "running" in k}, "BatchNorm statistics should follow the batches"
    else:
        assert moved & bn == set(), "BatchNorm weights and statistics must stay as pretrained"


def test_freeze_unfreeze_changes_backbone_only_from_unfreeze_epoch():
    pl.seed_everything(0)
    model, data = ToyClassifier(), toy_data()
    initial = snapshot(model.backbone)
    snaps = EpochSnapshots()
    trainer(max_epochs=3, callbacks=[snaps]).finetune(
        model, data, strategy=("freeze_unfreeze", 2), train_bn=False
    )
    assert changed(initial, snaps.by_epoch[1]) == set()
    assert changed(initial, snaps.by_epoch[2]) != set()


def test_unfreeze_milestones_unfreezes_last_blocks_first():
    pl.seed_everything(0)
    model, data = ToyClassifier(depth=3), toy_data()
    initial = snapshot(model.backbone)
    snaps = EpochSnapshots()
    strategy = UnfreezeMilestones(unfreeze_milestones=(1, 2), num_layers=1, train_bn=False)
    trainer(max_epochs=3, callbacks=[snaps]).finetune(model, data, strategy=strategy)

    def block_changed(epoch: int, block: int) -> bool:
        keys = [k for k in initial if k.startswith(f"blocks.{block}.")]
        return bool(changed(initial, snaps.by_epoch[epoch], keys))

    assert not any(block_changed(0, b) for b in range(3))
    assert [block_changed(1, b) for b in range(3)] == [False, False, True]
    assert [block_changed(2, b) for b in range(3)] == [True, True, True]


def test_unfreeze_milestones_tuple_form_and_defaults():
    model = ToyClassifier(depth=4)
    strategy = flash.core.training.finetuning.resolve_strategy(("unfreeze_milestones", ((1, 3), 2)))
    assert strategy.unfreeze_milestones == (1, 3) and strategy.num_layers == 2
    default = flash.core.training.finetuning.resolve_strategy("unfreeze_milestones")
    default.resolve_defaults(model, 9)
    assert default.unfreeze_milestones == (3, 6) and default.num_layers == 2
    fu = flash.core.training.finetuning.resolve_strategy("freeze_unfreeze")
    fu.resolve_defaults(model, 10)
    assert fu.unfreeze_epoch == 5


class LrRecorder(Callback):
    def __init__(self) -> None:
        self.lrs: list[list[float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine", "linear_warmup", "reduce_on_plateau"])
def test_schedulers_cover_unfrozen_backbone(scheduler):
    pl.seed_everything(0)
    model = ToyClassifier(lr_scheduler=scheduler, learning_rate=0.01, backbone_lr_factor=0.1)
    data = toy_data()
    initial = snapshot(model.backbone)
    recorder = LrRecorder()
    trainer(max_epochs=3, callbacks=[recorder]).finetune(
        model, data, strategy=FreezeUnfreeze(unfreeze_epoch=1)
    )
    assert changed(initial, snapshot(model.backbone)) != set()
    groups = trainer_groups = recorder.lrs
    assert len({len(g) for g in trainer_groups}) == 1, "param groups must stay stable"
    head, backbone = [g[0] for g in groups], [g[1] for g in groups]
    assert all(abs(b - 0.1 * h) < 1e-12 for h, b in zip(head, backbone)), (
        "backbone keeps its discriminative rate"
    )
    if scheduler != "reduce_on_plateau":
        assert len(set(backbone)) > 1, "the scheduler moves the backbone's rate too"


def test_discriminative_rates_per_block():
    model = ToyClassifier(depth=3, learning_rate=1e-2, backbone_lr_factor=0.5, layer_lr_decay=0.5)
    groups = model.param_groups()
    assert [g["name"] for g in groups] == ["head", "backbone.0", "backbone.1", "backbone.2"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-2, 1.25e-3, 2.5e-3, 5e-3])
    all_params = {id(p) for p in model.parameters()}
    assert {id(p) for g in groups for p in g["params"]} == all_params


def run_to_end(tmp_path, stop_after: int | None = None, ckpt_path=None) -> tuple[dict, dict]:
    pl.seed_everything(7)
    model, data = ToyClassifier(lr_scheduler="cosine"), toy_data()
    callbacks: list[Callback] = [
        pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=-1)
    ]

    class StopAt(Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if stop_after is not None and trainer.current_epoch == stop_after:
                trainer.should_stop = True

    callbacks.append(StopAt())
    t = flash.Trainer(
        max_epochs=5,
        callbacks=callbacks,
        enable_progress_bar=False,
        logger=False,
        deterministic=True,
        default_root_dir=tmp_path,
    )
    t.finetune(model, data, strategy=FreezeUnfreeze(unfreeze_epoch=2), ckpt_path=ckpt_path)
    optimizer = t.optimizers[0]
    state = {
        "lrs": [g["lr"] for g in optimizer.param_groups],
        "names": [g["name"] for g in optimizer.param_groups],
        "scheduler": t.lr_scheduler_configs[0].scheduler.state_dict(),
    }
    return snapshot(model), state


def test_resume_mid_freeze_unfreeze_matches_uninterrupted_run(tmp_path):
    full, full_state = run_to_end(tmp_path / "full")
    run_to_end(tmp_path / "part", stop_after=2)
    resumed, resumed_state = run_to_end(tmp_path / "resumed", ckpt_path=str(tmp_path / "part" / "last.ckpt"))
    assert changed(full, resumed) == set()
    assert full_state["names"] == resumed_state["names"]
    assert full_state["lrs"] == resumed_state["lrs"]
    assert full_state["scheduler"]["last_epoch"] == resumed_state["scheduler"]["last_epoch"]


def test_seed_custom_callback_snippet_runs():
    class FeatureExtractorFreezeUnfreeze(FlashBaseFinetuning):
        def __init__(self, unfreeze_at_epoch: int = 5, train_bn: bool = True):
            # this will set self.attr_names as ["feature_extractor"]
            super().__init__("feature_extractor", train_bn)
            self._unfreeze_at_epoch = unfreeze_at_epoch

        def finetune_function(self, pl_module, current_epoch, optimizer, opt_idx):
            # When ``current_epoch`` is 5, feature_extractor will start to be trained.
            if current_epoch == self._unfreeze_at_epoch:
                self.unfreeze_and_add_param_group(
                    module=pl_module.feature_extractor,
                    optimizer=optimizer,
                    train_bn=True,
                )

    pl.seed_everything(0)
    model, data = ToyClassifier(), toy_data()
    snaps = EpochSnapshots()
    initial = snapshot(model.backbone)
    t = trainer(max_epochs=3, callbacks=[snaps])
    # as on the finetuning page, which passes unfreeze_epoch= to an __init__ that names it unfreeze_at_epoch
    t.finetune(model, data, strategy=FeatureExtractorFreezeUnfreeze(unfreeze_epoch=2, train_bn=False))
    assert changed(initial, snaps.by_epoch[1]) == set()
    assert changed(initial, snaps.by_epoch[2]) != set()


def test_lightning_three_argument_finetune_function_and_plain_basefinetuning():
    from lightning.pytorch.callbacks import BackboneFinetuning

    class Lightning2Style(FlashBaseFinetuning):
        def finetune_function(self, pl_module, epoch, optimizer):
            if epoch == 1:
                self.unfreeze_and_add_param_group(pl_module.backbone, optimizer)

    pl.seed_everything(0)
    model, data = ToyClassifier(), toy_data()
    initial = snapshot(model.backbone)
    trainer(max_epochs=2).finetune(model, data, strategy=Lightning2Style(train_bn=False))
    assert changed(initial, snapshot(model.backbone)) != set()
    trainer(max_epochs=2).finetune(
        ToyClassifier(), toy_data(), strategy=BackboneFinetuning(unfreeze_backbone_at_epoch=1)
    )


class CountingToy(ToyClassifier):
    steps = 0

    def training_step(self, batch, batch_idx):
        CountingToy.steps += 1
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        ("freeze_everything", "freeze_unfreeze"),
        (("freeze_unfreeze",), "(name, argument)"),
        (("unfreeze_milestones", (3, 1)), "((m1, m2), num_layers)"),
        (("unfreeze_milestones", ((3, 1), 1)), "in order"),
        (UnfreezeMilestones((1, 2), num_layers=9), "only 3 blocks"),
        (FlashBaseFinetuning("encoder"), "Modules it has: backbone, head"),
        (42, "must be a name"),
    ],
)
def test_bad_strategy_fails_before_training(strategy, message):
    CountingToy.steps = 0
    with pytest.raises((ValueError, TypeError, AttributeError)) as error:
        strategy = (
            strategy() if callable(strategy) and not isinstance(strategy, FlashBaseFinetuning) else strategy
        )
        trainer(max_epochs=1).finetune(CountingToy(), toy_data(), strategy=strategy)
    assert message in str(error.value)
    assert CountingToy.steps == 0


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"optimizer": "adamm"}, "adamw"), ({"lr_scheduler": "cosin"}, "cosine")]
)
def test_unknown_optimizer_or_scheduler_names_the_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ToyClassifier(**kwargs)


def test_frozen_batchnorm_stays_in_eval_after_validation():
    pl.seed_everything(0)
    model, data = ToyClassifier(), toy_data()
    modes: list[bool] = []

    class Watch(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.extend(m.training for m in pl_module.backbone.modules() if isinstance(m, nn.BatchNorm1d))

    trainer(max_epochs=2, callbacks=[Watch()]).finetune(model, data, strategy="freeze", train_bn=False)
    assert modes and not any(modes)


def test_model_copy_unaffected_by_strategy_instance_reuse():
    strategy = FreezeUnfreeze(unfreeze_epoch=1)
    clone = copy.deepcopy(strategy)
    assert clone.unfreeze_epoch == 1


def _ddp_run(tmp_path, *flags: str) -> tuple[dict, dict, dict]:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "ddp_unfreeze_run.py"
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), *flags], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    load = lambda name: torch.load(tmp_path / name, weights_only=True)  # noqa: E731
    return load("initial0.pt"), load("rank0.pt"), load("rank1.pt")


@pytest.mark.slow
def test_ddp_ranks_identical_after_unfreezing(tmp_path):
    initial, rank0, rank1 = _ddp_run(tmp_path / "rewrap")
    assert changed(initial, rank0) != set(), "the backbone must train after unfreezing"
    assert changed(rank0, rank1) == set(), "ranks diverged after unfreezing"
    # Control: without re-wrapping DDP after unfreezing, the ranks do diverge.
    _, plain0, plain1 = _ddp_run(tmp_path / "plain", "--no-rewrap")
    assert changed(plain0, plain1) != set()
