"""strategy="auto": every candidate on the same folds, the cheapest within one standard error wins."""

from __future__ import annotations

import pytest

import flash
from flash.core.training.auto import AutoResult, Candidate, choose
from toy import ToyClassifier, toy_data

QUIET = {"enable_progress_bar": False, "max_epochs": 2}


def test_the_cheapest_candidate_within_one_standard_error_of_the_best_wins():
    assert choose([0.80, 0.90, 0.91], [0.02, 0.02, 0.02], "max") == 1  # 0.90 >= 0.91 - 0.02
    assert choose([0.80, 0.85, 0.91], [0.02, 0.02, 0.02], "max") == 2
    assert choose([0.30, 0.20, 0.21], [0.05, 0.05, 0.005], "min") == 1  # losses: lower is better
    assert choose([0.5], [0.0], "max") == 0


def test_auto_cross_validates_each_candidate_then_trains_the_chosen_one(tmp_path):
    data = toy_data(n=40)
    model = ToyClassifier(learning_rate=1e-2)
    trainer = flash.Trainer(default_root_dir=tmp_path, **QUIET)
    candidates = [Candidate("freeze"), Candidate("no_freeze", 0.5), Candidate("no_freeze")]
    result = trainer.finetune(
        model, data, strategy=("auto", {"folds": 2, "candidates": candidates, "verbose": False})
    )
    assert isinstance(result, AutoResult) and trainer.auto_result is result
    assert [row["candidate"] for row in result.leaderboard] == ["freeze", "no_freeze, lr x0.5", "no_freeze"]
    assert sum(row["chosen"] for row in result.leaderboard) == 1
    best = max(result.leaderboard, key=lambda row: row["mean"])
    assert best["difference"] == 0.0
    chosen = next(row for row in result.leaderboard if row["chosen"])
    assert chosen["mean"] >= best["mean"] - best["standard_error"]
    assert model.learning_rate == pytest.approx(1e-2 * result.chosen.lr_factor)
    assert trainer.history and trainer.history[-1]["epoch"] == 1  # the chosen setting trained the task
    assert (
        result.results["freeze"].outputs.shape[1] == 40
    )  # the 40 training items; the 20 validation ones stay out
    assert "<- chosen" in str(result) and len(result.to_frame()) == 3
    for row in result.leaderboard:  # every candidate saw the same folds: paired differences
        folds = result.results[row["candidate"]].fold_of
        assert (folds == result.results["freeze"].fold_of).all()


def test_repeats_draw_fresh_folds_for_every_candidate(tmp_path):
    trainer = flash.Trainer(default_root_dir=tmp_path, **QUIET)
    candidates = [Candidate("freeze"), Candidate("no_freeze")]
    result = trainer.finetune(
        ToyClassifier(),
        toy_data(n=30),
        strategy=("auto", {"folds": 2, "repeats": 2, "candidates": candidates, "verbose": False}),
    )
    for label, cv in result.results.items():
        assert len(cv.folds) == 4, label  # 2 folds x 2 repeats, each with its own score
        assert cv.fold_of.shape == (2, 30)
        assert (cv.fold_of == result.results["freeze"].fold_of).all()
    assert not (result.results["freeze"].fold_of[0] == result.results["freeze"].fold_of[1]).all()
    with pytest.raises(ValueError, match="repeats"):
        trainer.finetune(ToyClassifier(), toy_data(n=30), strategy=("auto", {"repeats": 0}))


def test_time_limit_skips_what_does_not_fit_and_says_so(tmp_path):
    trainer = flash.Trainer(default_root_dir=tmp_path, **QUIET)
    with pytest.warns(UserWarning, match="too small for one candidate"):
        result = trainer.finetune(
            ToyClassifier(),
            toy_data(n=20),
            strategy=("auto", {"folds": 2, "time_limit": 1e-3, "verbose": False}),
        )
    assert len(result.leaderboard) == 1 and result.leaderboard[0]["chosen"]
    assert len(result.skipped) == 2


def test_bad_auto_input_is_refused_before_training(tmp_path):
    trainer = flash.Trainer(default_root_dir=tmp_path, **QUIET)
    data = toy_data(n=20)
    with pytest.raises(ValueError, match="Unknown auto option"):
        trainer.finetune(ToyClassifier(), data, strategy=("auto", {"fold": 3}))
    with pytest.raises(ValueError, match="time_limit"):
        trainer.finetune(ToyClassifier(), data, strategy=("auto", {"time_limit": -1}))
    with pytest.raises(ValueError, match="Unknown finetuning strategy"):
        trainer.finetune(ToyClassifier(), data, strategy=("auto", {"candidates": ["frozen"]}))
    with pytest.raises(ValueError, match="has only 1 training item"):
        trainer.finetune(ToyClassifier(), toy_data(n=6), strategy=("auto", {"folds": 2}))
    with pytest.raises(ValueError, match="Use folds <= 10"):
        trainer.finetune(ToyClassifier(), data, strategy=("auto", {"folds": 11}))
    model = ToyClassifier()
    del model.backbone
    model.backbone = None
    with pytest.raises(TypeError, match="has none"):
        trainer.finetune(model, data, strategy="auto")
    assert not (tmp_path / "cross_validation").exists()


def test_candidates_set_both_rates_and_duplicates_run_once(tmp_path):
    model = ToyClassifier(learning_rate=1e-2, backbone_lr_factor=0.1)
    candidates = [
        Candidate("freeze"),
        Candidate("freeze", backbone_lr_factor=0.1),
        Candidate("no_freeze", 2.0, backbone_lr_factor=1.0),
    ]
    trainer = flash.Trainer(default_root_dir=tmp_path, **QUIET)
    result = trainer.finetune(
        model, toy_data(n=20), strategy=("auto", {"folds": 2, "candidates": candidates, "verbose": False})
    )
    assert [row["candidate"] for row in result.leaderboard] == [
        "freeze",
        "no_freeze, lr x2, backbone at x1 the head's rate",
    ]
    if result.chosen.strategy == "no_freeze":
        assert (model.learning_rate, model.backbone_lr_factor) == (pytest.approx(2e-2), 1.0)
    else:
        assert (model.learning_rate, model.backbone_lr_factor) == (pytest.approx(1e-2), 0.1)
    with pytest.raises(ValueError, match="must be positive"):
        trainer.finetune(model, toy_data(n=20), strategy=("auto", {"candidates": [Candidate("freeze", 0.0)]}))


def test_image_classifiers_also_try_the_backbone_at_the_heads_rate():
    from flash.core.training.auto import DEFAULT_CANDIDATES
    from flash.image import ImageClassifier

    candidates = ImageClassifier.auto_candidates(None)
    assert candidates[: len(DEFAULT_CANDIDATES)] == DEFAULT_CANDIDATES
    assert candidates[-1] == Candidate("no_freeze", backbone_lr_factor=1.0)


def test_table_tasks_search_learning_rates_not_freezing():
    from flash.tabular.model import TabularClassifier

    candidates = TabularClassifier.auto_candidates(None)
    assert {c.strategy for c in candidates} == {"no_freeze"}
    assert sorted(c.lr_factor for c in candidates) == pytest.approx([1 / 3, 1.0, 3.0])
