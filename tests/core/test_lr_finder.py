"""flash.Trainer.lr_find: a suggestion and a plot, and the task exactly as it was before."""

from __future__ import annotations

import math
import random

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import flash
from flash.core.training.lr_finder import LRFinderResult, smooth, suggest_learning_rate
from toy import ToyClassifier, toy_data

QUIET = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "logger": False,
}


def snapshot(task):
    return {k: v.detach().clone() for k, v in task.state_dict().items()}


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    """One range test on the toy, shared by the checks below (it is the slow part)."""
    pl.seed_everything(0)
    task, data = ToyClassifier(), toy_data(n=64, batch_size=16)
    before = snapshot(task)
    grads = {n: p.requires_grad for n, p in task.named_parameters()}
    modes = {n: m.training for n, m in task.named_modules()}
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    rng = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    root = tmp_path_factory.mktemp("lr")
    trainer = flash.Trainer(max_epochs=2, default_root_dir=root, **QUIET)
    plot_path = root / "lr_finder.png"
    result = trainer.lr_find(task, data, strategy="freeze", num_training=20, plot_path=plot_path)
    rng_after = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    return {
        "task": task,
        "data": data,
        "trainer": trainer,
        "result": result,
        "before": before,
        "grads": grads,
        "modes": modes,
        "rng": (rng, rng_after),
        "plot_path": plot_path,
    }


def test_returns_a_suggestion_and_a_png_plot(found):
    result = found["result"]
    assert isinstance(result, LRFinderResult)
    suggestion, plot = result
    assert suggestion is not None and 1e-7 <= suggestion <= 1.0
    assert plot == found["plot_path"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000
    assert len(result.lrs) == len(result.losses) == 20
    assert result.lrs == sorted(result.lrs)


def test_task_weights_batchnorm_and_trainability_are_restored_bit_identically(found):
    task, before = found["task"], found["before"]
    after = task.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any("running_mean" in k for k in before)  # BatchNorm statistics are among the compared
    assert {n: p.requires_grad for n, p in task.named_parameters()} == found["grads"]
    assert {n: m.training for n, m in task.named_modules()} == found["modes"]


def test_random_state_is_untouched(found):
    before, after = found["rng"]
    assert before == after


def test_the_trainer_still_finetunes_afterwards_with_a_clean_history(found):
    trainer, task, data = found["trainer"], found["task"], found["data"]
    assert trainer.history == []
    assert task.learning_rate == 1e-3  # update_attr=False leaves the rate alone
    trainer.finetune(task, data, strategy="freeze")
    assert len(trainer.history) == 2


def test_without_a_plot_path_the_plot_is_a_figure_and_update_attr_sets_the_rate():
    from matplotlib.figure import Figure

    pl.seed_everything(0)
    task, data = ToyClassifier(learning_rate=1e-3), toy_data(n=32, batch_size=16)
    result = flash.Trainer(**QUIET).lr_find(task, data.train_dataloader(), num_training=8, update_attr=True)
    assert isinstance(result.plot, Figure)
    assert task.learning_rate == task.hparams["learning_rate"] == result.suggestion


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_lr": 0}, "min_lr must be a positive number"),
        ({"min_lr": 1.0, "max_lr": 0.1}, "must be smaller than max_lr"),
        ({"num_training": 1}, "num_training must be a whole number"),
        ({"early_stop_threshold": 0.5}, "early_stop_threshold"),
        ({"strategy": "sometimes"}, "Unknown finetuning strategy"),
    ],
)
def test_bad_arguments_are_refused_before_any_step(kwargs, message):
    task, data = ToyClassifier(), toy_data(n=32)
    before = snapshot(task)
    with pytest.raises(ValueError, match=message):
        flash.Trainer(**QUIET).lr_find(task, data, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in task.state_dict().items())


def test_refuses_things_that_are_not_tasks_or_data():
    with pytest.raises(TypeError, match="LightningModule"):
        flash.Trainer(**QUIET).lr_find(torch.nn.Linear(2, 2), toy_data())
    with pytest.raises(TypeError, match="data module or a training DataLoader"):
        flash.Trainer(**QUIET).lr_find(ToyClassifier(), [1, 2, 3])


def test_suggestion_is_the_steepest_fall_before_the_minimum():
    lrs = [10 ** (-6 + 6 * i / 59) for i in range(60)]
    # flat, then a fall that is steepest around 1e-3, a minimum near 1e-1, then divergence
    losses = [1.0 - 0.8 / (1 + math.exp(-3 * (math.log10(lr) + 3))) for lr in lrs]
    losses = [loss if lr < 0.1 else loss + 50 * (lr - 0.1) for lr, loss in zip(lrs, losses)]
    suggestion = suggest_learning_rate(lrs, losses)
    assert 3e-4 < suggestion < 3e-3


def test_suggestion_ignores_a_noisy_low_start_and_needs_enough_points():
    lrs = [10 ** (-7 + 7 * i / 49) for i in range(50)]
    losses = [0.2, 0.4] + [1.0 - 0.5 * (i / 47) for i in range(47)] + [5.0]
    assert suggest_learning_rate(lrs, losses) > lrs[2]
    assert suggest_learning_rate(lrs[:2], losses[:2]) is None
    assert suggest_learning_rate([1e-3, 1e-2, 1e-1], [float("nan")] * 3) is None


def test_smoothing_is_unbiased_from_the_first_step():
    # Lightning's own smoothed losses start at about half the real loss; these must not
    assert smooth([0.7] * 20) == pytest.approx([0.7] * 20)
    noisy = [0.7 + (0.2 if i % 2 else -0.2) for i in range(40)]
    assert max(abs(v - 0.7) for v in smooth(noisy)[10:]) < 0.1
    assert smooth([1.0, float("nan"), 1.0])[1] != smooth([1.0, float("nan"), 1.0])[1]  # NaN kept


def test_recorded_losses_are_the_raw_training_losses(found):
    result = found["result"]
    assert len(result.raw_losses) == len(result.lrs)
    assert result.losses == pytest.approx(smooth(result.raw_losses))
    assert 0.3 < result.raw_losses[0] < 1.5  # a two-class cross-entropy at the start, not half of it
