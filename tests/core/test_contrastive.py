"""The ``contrastive`` strategy: the backbone trains on pairs, the head is fitted as a logistic regression."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything
from sklearn.linear_model import LogisticRegression
from tests.toy import ToyClassifier, toy_data
from torch import nn

import flash
from flash.core.training.contrastive import Contrastive, class_vectors, fit_logistic_head
from flash.core.training.finetuning import STRATEGIES, resolve_strategy


def _trainer(epochs: int = 3) -> flash.Trainer:
    return flash.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )


def test_it_is_a_named_strategy():
    assert STRATEGIES["contrastive"] is Contrastive
    assert isinstance(resolve_strategy("contrastive"), Contrastive)


@pytest.mark.parametrize(("l2", "classes"), [(0.5, 3), (1.0, 3), (4.0, 3), (1.0, 2)])
def test_the_head_fit_is_scikit_learns_logistic_regression_on_unit_scaled_features(l2, classes):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 6)).astype(np.float32) * 3.0
    score = features[:, 0] - features[:, 2] + rng.normal(size=60)
    targets = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1])).astype(np.int64)
    scale = np.sqrt((features**2).sum(axis=1).mean())
    # two classes: one weight vector in scikit-learn's binary form, two softmax rows here
    c = 1 / l2 if classes > 2 else 2 / l2
    reference = LogisticRegression(C=c, tol=1e-8, max_iter=10_000).fit(features / scale, targets)

    head = nn.Linear(6, classes)
    fit_logistic_head(head, torch.from_numpy(features), torch.from_numpy(targets), l2, max_iter=500)
    ours = torch.softmax(head(torch.from_numpy(features)), dim=1).detach().numpy()
    np.testing.assert_allclose(ours, reference.predict_proba(features / scale), atol=2e-3)
    assert head.weight.grad is None


def test_class_vectors_are_the_normalised_rows_of_a_linear_heads_weight():
    head = nn.Sequential(nn.Dropout(0.1), nn.Linear(4, 3))
    vectors = class_vectors(head, 3)
    assert torch.allclose(vectors, torch.nn.functional.normalize(head[1].weight.detach(), dim=1))
    assert class_vectors(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 3)), 3) is None  # no single weight


def test_training_moves_the_backbone_fits_the_head_and_restores_the_training_step():
    seed_everything(0, verbose=False)
    data = toy_data(n=64, batch_size=32)
    model = ToyClassifier(learning_rate=1e-2)
    before = [p.detach().clone() for p in model.backbone.parameters()]
    trainer = _trainer(epochs=4)
    trainer.finetune(model, data, strategy="contrastive")

    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))
    assert model.training_objective is None
    assert trainer.callback_metrics["val_accuracy"] > 0.7  # validation used a fitted head (not chance)
    assert "train_loss" in trainer.callback_metrics


def test_it_refuses_tasks_it_cannot_train():
    model = ToyClassifier(multi_label=True)
    with pytest.raises(ValueError, match="multi-label"):
        _trainer().finetune(model, toy_data(), strategy="contrastive")

    class NoHead(nn.Module):
        backbone = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="head"):
        Contrastive().validate(NoHead())
    with pytest.raises(ValueError, match="positive number"):
        Contrastive(temperature=0)
    with pytest.raises(ValueError, match="head_l2"):
        Contrastive(head_l2=-1.0)
