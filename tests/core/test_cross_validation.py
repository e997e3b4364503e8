"""Cross-validation: folds that cover every item once, fresh tasks per fold, deterministic runs."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import flash
from flash.core.data.folds import make_folds
from flash.core.training.cross_validation import CrossValidationResult
from toy import ToyClassifier, toy_data

QUIET = {"enable_progress_bar": False, "max_epochs": 2}


def test_stratified_folds_cover_every_item_once_and_every_class_in_each_fold():
    targets = np.array([0] * 12 + [1] * 6 + [2] * 3)
    folds = make_folds(targets, folds=3, seed=1)
    held = np.concatenate([held_out for _, held_out in folds])
    assert sorted(held.tolist()) == list(range(len(targets)))
    for train, held_out in folds:
        assert not set(train) & set(held_out)
        assert len(train) + len(held_out) == len(targets)
        assert sorted(set(targets[held_out].tolist())) == [0, 1, 2]
    again = make_folds(targets, folds=3, seed=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = make_folds(targets, folds=3, seed=2)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


@pytest.mark.parametrize("targets", [np.array([0, 1] * 10), np.linspace(0, 1, 20).astype(np.float32)])
def test_groups_never_straddle_a_fold(targets):
    groups = [i // 2 for i in range(len(targets))]  # items 2k and 2k+1: the same photo twice
    for train, held_out in make_folds(targets, folds=4, seed=0, groups=groups):
        assert not {groups[i] for i in train} & {groups[i] for i in held_out}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"folds": 5}, "class 1 has only 3"),
        ({"folds": 1}, "folds"),
        ({"folds": 2, "groups": [0, 1]}, "groups has 2 entries"),
        ({"folds": 3, "groups": [0] * 5 + [1] * 3}, "only 2 distinct groups"),
    ],
)
def test_impossible_folds_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_folds(np.array([0] * 5 + [1] * 3), **kwargs)


def test_cross_validate_reports_folds_and_out_of_fold_outputs(tmp_path, capsys):
    data = toy_data(n=40)
    trainer = flash.Trainer(default_root_dir=tmp_path, **QUIET)
    result = trainer.cross_validate(ToyClassifier(), data, folds=3, strategy="freeze")
    assert isinstance(result, CrossValidationResult)
    assert [row["fold"] for row in result.folds] == [0, 1, 2]
    assert sum(row["held_out_items"] for row in result.folds) == 60  # 40 train + 20 val, pooled
    assert result.outputs.shape == (1, 60, 2) and result.fold_of.min() == 0
    assert np.array_equal(
        result.targets, np.concatenate([data.splits["train"].targets, data.splits["val"].targets])
    )
    accuracies = result.values("val_accuracy")
    assert result.mean() == pytest.approx(np.mean(accuracies))
    assert result.std() == pytest.approx(np.std(accuracies, ddof=1))
    for fold in range(3):  # each fold's accuracy is its out-of-fold predictions' accuracy
        held = result.fold_of[0] == fold
        agreement = (result.predictions()[held] == result.targets[held]).mean()
        assert agreement == pytest.approx(accuracies[fold], abs=1e-6)
    assert set(result.summary()) == {"val_loss", "val_accuracy", "val_f1"}
    printed = capsys.readouterr().err
    assert "fold 1/3: val_accuracy" in printed and "fold 3/3" in printed
    assert "Trainer.fit` stopped" not in printed
    assert (tmp_path / "cross_validation" / "repeat_0_fold_2").is_dir()
    assert not list((tmp_path / "cross_validation").rglob("*.ckpt"))


def test_cross_validate_is_deterministic_and_leaves_the_global_generators_alone(tmp_path):
    data = toy_data(n=32)
    trainer = flash.Trainer(default_root_dir=tmp_path, **QUIET)
    model = ToyClassifier()
    before = model.state_dict()
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    first = trainer.cross_validate(model, data, folds=2, repeats=2, verbose=False)
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the task stays untrained
    second = trainer.cross_validate(model, data, folds=2, repeats=2, verbose=False)
    assert np.array_equal(first.outputs, second.outputs)
    assert len(first.folds) == 4 and first.outputs.shape[0] == 2
    by_factory = [
        trainer.cross_validate(lambda: ToyClassifier(), data, folds=2, verbose=False) for _ in range(2)
    ]
    assert np.array_equal(by_factory[0].outputs, by_factory[1].outputs)


def test_a_factory_gets_the_fold_data(tmp_path):
    seen = []

    def factory(fold_data):
        seen.append(len(fold_data.splits["train"]))
        return ToyClassifier()

    flash.Trainer(default_root_dir=tmp_path, **QUIET).cross_validate(
        factory, toy_data(n=20), folds=3, verbose=False
    )
    assert sorted(seen) == [20, 20, 20]


def test_bad_arguments_fail_before_training(tmp_path):
    trainer = flash.Trainer(default_root_dir=tmp_path, **QUIET)
    data = toy_data(n=20)
    with pytest.raises(ValueError, match="Unknown"):
        trainer.cross_validate(ToyClassifier(), data, strategy="freze")
    with pytest.raises(TypeError, match="flash data module"):
        trainer.cross_validate(ToyClassifier(), [1, 2, 3])
    with pytest.raises(TypeError, match="task or a function"):
        trainer.cross_validate(3, data)
    with pytest.raises(ValueError, match="repeats"):
        trainer.cross_validate(ToyClassifier(), data, repeats=0)
    with pytest.raises(TypeError, match="not a task"):
        trainer.cross_validate(lambda: "model", data, folds=2, verbose=False)
    assert not (tmp_path / "cross_validation").exists()


def test_data_that_fits_preprocessing_needs_a_task_that_can_be_rebuilt(tmp_path):
    data = toy_data(n=20)
    data.fold_needs_fresh_task = True
    with pytest.raises(TypeError, match=r"pass a function, e\.g\. model=lambda data"):
        flash.Trainer(default_root_dir=tmp_path, **QUIET).cross_validate(ToyClassifier(), data, folds=2)
