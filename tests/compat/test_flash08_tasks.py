"""Lightning Flash 0.8 task and finetuning spellings (items 10, 11, 12 and 15 of the migration
page): optimizers and schedulers as Flash took them, custom tasks, custom strategies."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flash
from flash.core.finetuning import FlashBaseFinetuning, FreezeUnfreeze, NoFreeze, UnfreezeMilestones
from flash.core.training.finetuning import resolve_strategy
from toy import ToyClassifier


def quiet(**kwargs) -> dict:
    return dict(
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **kwargs,
    )


def configured(**kwargs):
    config = ToyClassifier(**kwargs).configure_optimizers()
    return (config["optimizer"], config["lr_scheduler"]) if isinstance(config, dict) else (config, None)


# -- 10. optimizers and schedulers ----------------------------------------------------------------
def test_optimizer_name_with_kwargs_tuple():
    optimizer, _ = configured(optimizer=("Adam", {"weight_decay": 0.01, "amsgrad": True}))
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.defaults["weight_decay"] == 0.01 and optimizer.defaults["amsgrad"] is True


@pytest.mark.parametrize("name", ["Adagrad", "adagrad", "ADAGRAD", "RAdam", "SGD"])
def test_any_torch_optimizer_by_class_name_in_any_case(name):
    optimizer, _ = configured(optimizer=name)
    assert type(optimizer).__name__.lower() == name.lower()


def test_scheduler_tuples_and_the_lightning_configuration():
    _, config = configured(lr_scheduler=("StepLR", {"step_size": 10}))
    assert (
        type(config["scheduler"]) is torch.optim.lr_scheduler.StepLR and config["scheduler"].step_size == 10
    )
    assert config["interval"] == "epoch"
    _, config = configured(lr_scheduler=("reducelronplateau", {"mode": "max"}, {"monitor": "val_accuracy"}))
    assert type(config["scheduler"]) is torch.optim.lr_scheduler.ReduceLROnPlateau
    assert config["scheduler"].mode == "max" and config["monitor"] == "val_accuracy"
    _, config = configured(lr_scheduler=("steplr", {"step_size": 2}, {"interval": "step"}))
    assert config["interval"] == "step"


def test_callables_still_work():
    _, config = configured(
        optimizer=partial(torch.optim.SGD, momentum=0.5),
        lr_scheduler=partial(torch.optim.lr_scheduler.CyclicLR, base_lr=1e-4, max_lr=1e-2, step_size_up=5),
    )
    assert type(config["scheduler"]) is torch.optim.lr_scheduler.CyclicLR


def test_current_optimizer_and_scheduler_names_are_unchanged():
    optimizer, config = configured(optimizer="sgd", lr_scheduler="cosine")
    assert type(optimizer) is torch.optim.SGD and optimizer.defaults["momentum"] == 0.9
    assert (
        type(config["scheduler"]) is torch.optim.lr_scheduler.CosineAnnealingLR
        and config["interval"] == "step"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"optimizer": ("Adam", 0.1)}, TypeError, r"\(name, kwargs\)"),
        ({"optimizer": "Adamm"}, ValueError, "Unknown optimizer 'Adamm'"),
        ({"lr_scheduler": ("StepLR",)}, TypeError, "lightning_config"),
        ({"lr_scheduler": "steplrr"}, ValueError, "Unknown lr_scheduler"),
    ],
)
def test_bad_optimizer_specs_fail_when_the_task_is_built(kwargs, error, match):
    with pytest.raises(error, match=match):
        ToyClassifier(**kwargs)


# -- 11. custom tasks: flash.Task(model=...), (x, y) batches, modules_to_freeze ---------------------
def xy_loader(n: int = 32) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=generator)
    y = (x[:, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=8)


def test_flash_task_with_a_model_trains_on_tuple_batches():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    task = flash.Task(
        model=model,
        loss_fn=F.cross_entropy,
        metrics=torchmetrics.Accuracy(task="multiclass", num_classes=2),
        learning_rate=0.05,
    )
    assert task.model is model
    before = [p.detach().clone() for p in model.parameters()]
    trainer = flash.Trainer(max_epochs=2, **quiet())
    trainer.fit(task, train_dataloaders=xy_loader(), val_dataloaders=xy_loader())
    assert "val_multiclass_accuracy" in trainer.callback_metrics
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    predictions = trainer.predict(task, dataloaders=DataLoader(torch.randn(5, 4), batch_size=5))
    assert len(predictions[0]) == 5 and predictions[0][0].shape == (2,)


def test_task_needs_a_model_or_a_backbone_and_head():
    with pytest.raises(TypeError, match="model="):
        flash.Task(loss_fn=F.cross_entropy)
    with pytest.raises(TypeError, match="not both"):
        flash.Task(nn.Linear(2, 2), nn.Linear(2, 2), model=nn.Linear(2, 2))


class TwoPart(flash.Task):
    """A Flash-style custom task that says what to freeze through modules_to_freeze()."""

    def __init__(self) -> None:
        super().__init__(model=nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), learning_rate=0.05)

    def modules_to_freeze(self):
        return self.model[0]


def test_modules_to_freeze_decides_what_the_strategies_freeze():
    task = TwoPart()
    first, last = task.model[0].weight.detach().clone(), task.model[2].weight.detach().clone()
    flash.Trainer(max_epochs=1, **quiet()).finetune(task, xy_loader(), strategy="freeze")
    assert torch.equal(task.model[0].weight, first)
    assert not torch.equal(task.model[2].weight, last)


def test_a_parameterless_backbone_under_unfreeze_milestones_is_a_no_op():
    task = flash.Task(model=nn.Linear(4, 2), learning_rate=0.05)
    trainer = flash.Trainer(max_epochs=2, **quiet())
    trainer.finetune(task, xy_loader(), strategy=("unfreeze_milestones", ((0, 1), 1)))
    assert trainer.current_epoch == 2


# -- 12. custom strategies --------------------------------------------------------------------------
def test_strategy_metadata_and_flash_positional_milestones():
    assert FreezeUnfreeze(strategy_metadata=2).unfreeze_epoch == 2
    assert FreezeUnfreeze(2).unfreeze_epoch == 2
    for strategy in (UnfreezeMilestones(((3, 8), 2)), UnfreezeMilestones(strategy_metadata=((3, 8), 2))):
        assert strategy.unfreeze_milestones == (3, 8) and strategy.num_layers == 2
    assert UnfreezeMilestones((3, 8), 2).unfreeze_milestones == (3, 8)  # this library's own spelling


def test_unfreeze_and_extend_param_group_joins_the_first_group():
    head, body = nn.Linear(4, 2), nn.Linear(4, 4)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    strategy = FlashBaseFinetuning()
    strategy.freeze_modules(body)
    assert not any(p.requires_grad for p in body.parameters())
    strategy.unfreeze_and_extend_param_group(body, optimizer, train_bn=True)
    assert all(p.requires_grad for p in body.parameters())
    assert len(optimizer.param_groups) == 1
    assert {id(p) for p in body.parameters()} <= {id(p) for p in optimizer.param_groups[0]["params"]}


def test_lightning_basefinetuning_helpers_are_there():
    for name in ("freeze", "make_trainable", "filter_params", "filter_on_optimizer", "flatten_modules"):
        assert callable(getattr(FlashBaseFinetuning, name))


@pytest.mark.parametrize("cls", [NoFreeze, FreezeUnfreeze])
def test_flash_train_bn_as_first_argument_is_a_clear_error(cls):
    with pytest.raises(TypeError, match=rf"{cls.__name__}\(train_bn=True\)"):
        cls(True) if cls is NoFreeze else cls(1, True)


# -- 15. Flash's exception types ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "strategy",
    [
        ("freeze_unfreeze", "a"),
        ("freeze_unfreeze", 1.5),
        ("unfreeze_milestones", (5, 10)),
        ("unfreeze_milestones", ((5, 10), "a")),
        ("unfreeze_milestones", ((5, "b"), 1)),
        ("freeze", 1),
        ("freeze_unfreeze", 1, 2),
    ],
)
def test_malformed_strategy_tuples_raise_type_error_and_still_value_error(strategy):
    with pytest.raises(TypeError) as caught:
        resolve_strategy(strategy)
    assert isinstance(caught.value, ValueError)  # code written against this library keeps working
