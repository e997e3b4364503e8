"""The metric-learning losses and the pair check, on hand-made vectors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flash.core.model.embedding import (
    PairLoss,
    check_pairs,
    multiple_negatives_loss,
    supervised_contrastive_loss,
)

LOSSES = [supervised_contrastive_loss, multiple_negatives_loss]


def clustered(spread: float) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(4)[:2]
    targets = torch.tensor([0, 0, 0, 1, 1, 1])
    noise = torch.randn(6, 4, generator=generator) * spread
    return F.normalize(centres[targets] + noise, dim=1), targets


@pytest.mark.parametrize("loss", LOSSES)
def test_tight_classes_cost_less_than_mixed_ones(loss):
    tight, targets = clustered(0.05)
    assert loss(tight, targets) < loss(tight, targets[torch.tensor([0, 3, 1, 4, 2, 5])])
    assert loss(tight, targets) < loss(*clustered(2.0))


@pytest.mark.parametrize("loss", LOSSES)
def test_a_batch_without_pairs_costs_nothing_but_still_backpropagates(loss):
    vectors = F.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    value = loss(vectors, torch.tensor([0, 1, 2]))
    value.backward()
    assert value.item() == 0.0 and vectors.grad is not None


def test_multiple_negatives_is_the_cross_entropy_of_each_pair_against_the_other_class():
    vectors, targets = clustered(0.3)
    vectors, targets = vectors[[0, 1, 3, 4]], targets[[0, 1, 3, 4]]
    similarity = vectors @ vectors.T / 0.05
    # anchor 0 pairs with 1; its candidates are 1 (positive), 2 and 3 (other class)
    expected = [
        F.cross_entropy(similarity[i, [p, *others]].unsqueeze(0), torch.tensor([0]))
        for i, p, others in ((0, 1, (2, 3)), (1, 0, (2, 3)), (2, 3, (0, 1)), (3, 2, (0, 1)))
    ]
    assert multiple_negatives_loss(vectors, targets).item() == pytest.approx(
        torch.stack(expected).mean().item(), rel=1e-5
    )


def test_pairs_are_checked_before_training():
    check_pairs([0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"single training example \('cats'\).*Add at least one more"):
        check_pairs([0, 0, 1], labels=["dogs", "cats"])
    with pytest.raises(ValueError, match="single class"):
        check_pairs([0, 0, 0])
    with pytest.raises(ValueError, match="multi-label"):
        check_pairs([[0, 1], [1, 0]])


def test_the_loss_is_named_and_checked_before_any_backbone_is_built():
    vectors, targets = clustered(0.3)
    assert PairLoss("multiple_negatives", 0.1)(vectors, targets) == multiple_negatives_loss(
        vectors, targets, 0.1
    )
    with pytest.raises(
        ValueError, match="Unknown loss 'triplet'.*supervised_contrastive, multiple_negatives"
    ):
        PairLoss("triplet")
    from flash.image import ImageEmbedder
    from flash.text import TextEmbedder

    for embedder in (TextEmbedder, ImageEmbedder):
        with pytest.raises(ValueError, match="temperature must be a positive number"):
            embedder(backbone="no-such-backbone", temperature=0)
